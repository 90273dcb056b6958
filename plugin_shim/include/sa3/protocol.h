// The sa3 daemon protocol as the shim speaks it. docs/protocol.md is the authority; this
// constant must equal the version that page states (tests/bridge checks they agree).
#pragma once

#define SA3_PROTOCOL_VERSION "1.6"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sa3/take.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace sa3 {

/// Largest `scale_lock_db` a job may ask for (docs/protocol.md, added in 1.1; the daemon answers
/// bad_field above it). tests/plugin_shim checks it equals bridge.protocol.MAX_SCALE_LOCK_DB.
constexpr double kMaxScaleLockDb = 48.0;

/// Most sampler `steps` a job may ask for (the daemon's `max_steps`; it answers bad_field above).
constexpr int kMaxSteps = 100;

/// Most LoRA adapters one job may name (the daemon's `max_loras`, added in 1.5; it answers bad_field
/// above). tests/plugin_shim checks it equals bridge.protocol.MAX_LORAS.
constexpr int kMaxLoras = 8;

/// A LoRA strength runs from -kMaxLoraStrength to kMaxLoraStrength (1 = as trained, 0 = left out;
/// the daemon answers bad_field outside). tests/plugin_shim checks it equals bridge.protocol.MAX_LORA_STRENGTH.
constexpr double kMaxLoraStrength = 2.0;

/// One model a daemon serves, as its `capabilities` reply lists it (`models`, added in 1.4).
struct ModelInfo {
  std::string name;    // what a job's `model` field says
  std::string family;  // "sa3" or "released"
  int defaultSteps = 0;
  double defaultCfg = 0.0;
  double maxSeconds = 0.0;
  std::vector<std::string> steering;  // the family's own request options (scale_lock_db, exact_length, ...)
};

/// One LoRA adapter in the daemon's folder, as its `capabilities` reply lists it (`loras`, added in 1.5).
struct LoraInfo {
  std::string name;               // what a job's `loras` names (the file's stem in lower case)
  std::string file;               // the file's name in the daemon's folder
  int rank = 0;                   // 0: a file sa3 cannot read (nil on the wire)
  std::string adapterType;        // "lora", "dora-rows", ...; "" for a file sa3 cannot read
  std::vector<std::string> fits;  // the served models it adapts
};

/// One job for the daemon, with audio at the host rate (the daemon replies at that rate).
struct RenderRequest {
  Mode mode = Mode::Inpaint;
  std::string prompt;
  std::string negativePrompt;                      // added in 1.4; "" = none (not sent)
  std::string model;                               // added in 1.4; "" = not sent (a daemon before 1.4 serves one model)
  double initNoiseLevel = kDefaultInitNoiseLevel;  // transform only (added in 1.4), 0 < level <= 1
  std::vector<LoraUse> loras;                      // added in 1.5, in the order they apply; none: not sent
  // added in 1.6, any mode: the requested length without the released models' 6 s of headroom
  // (a steering option: only models whose `steering` lists exact_length take it); false: not sent
  bool exactLength = false;
  uint32_t seed = 0;
  int steps = 0;  // 0 = the model's default
  // dB per sampler step by which notes outside a key the prompt names are turned down
  // (0 = off, at most kMaxScaleLockDb); < 0: the model's setting (not sent)
  double scaleLockDb = -1.0;
  int sampleRate = 44100;
  std::vector<float> left, right;          // the input clip (inpaint, continue, transform), planar
  int64_t regionStart = 0, regionEnd = 0;  // inpaint: the span of the clip to regenerate
  int64_t newSamples = 0;                  // generate and continue: new audio to make
  double bpm = 0.0;                        // the song's tempo (0 = not sent); sample 0 of the clip is a downbeat
  int meterNumerator = 4, meterDenominator = 4;
};

/// One message from the daemon, decoded.
struct DaemonEvent {
  enum class Kind { Other, Capabilities, Heartbeat, Queued, Progress, Result, Cancelled, Error, Shutdown };
  Kind kind = Kind::Other;
  int64_t requestId = -1;  // echoed request_id, -1 when absent
  std::string jobId;
  // The daemon's instance (added in 1.3, in every header; "" from older daemons): another value
  // than the one that queued a job means the daemon restarted and the job is gone.
  std::string daemonId;
  std::string code, message;       // error
  int step = 0, total = 0;         // progress
  int defaultSteps = 0;            // capabilities: the model's steps when a request sends none (0: not said)
  std::string version;             // capabilities: the daemon's protocol version ("1.6")
  std::vector<ModelInfo> models;   // capabilities: every model served, the default first (empty before 1.4)
  std::vector<LoraInfo> loras;     // capabilities: the adapters in the daemon's LoRA folder (empty before 1.5)
  int maxLoras = 0;                // capabilities: adapters one job may name (0: not said, before 1.5)
  int stepsUsed = 0;               // result: the steps the job ran (0: not said)
  std::string model;               // result: the model that made it (added in 1.4; "" before)
  bool lorasSaid = false;          // result: it carried a readable `loras` list (added in 1.5)
  std::vector<LoraUse> usedLoras;  // result: the adapters and strengths that made it, in order
  int sampleRate = 0;              // result
  std::vector<float> left, right;
};

/// A DEALER socket to the daemon's ROUTER, speaking msgpack headers + planar float32 frames.
/// Used by one thread only (the processor's worker). Owns its own libzmq context: pyzmq in
/// the same process bundles another libzmq, so nothing ZeroMQ is ever shared with Python.
/// An endpoint ZeroMQ refuses ("banana", a typo in the editor) leaves the client without a
/// socket: sends do nothing, receive() waits out its timeout, and problem() says why.
class DaemonClient {
 public:
  explicit DaemonClient(std::string endpoint);
  ~DaemonClient();

  /// Drops the socket and everything queued on it, and connects a new one.
  void reconnect();
  /// "" when connected (or connecting); else one line naming the endpoint and the form it needs.
  const std::string& problem() const { return problem_; }
  void sendHello();
  void sendHeartbeat();
  /// Sends a generate/inpaint/continue/transform request; returns its request_id.
  int64_t submit(const RenderRequest& request);
  void cancel(const std::string& jobId);
  /// Takes a job over after a reconnect; returns the request_id its answers carry.
  int64_t fetch(const std::string& jobId);
  /// Waits up to timeoutMs for one message. Returns false on timeout. A message that cannot
  /// be decoded comes back as Kind::Other (it still proves the daemon is alive).
  bool receive(int timeoutMs, DaemonEvent& event);

  const std::string& endpoint() const { return endpoint_; }

 private:
  void sendHeader(const std::vector<char>& header, const std::vector<float>* left, const std::vector<float>* right);

  std::string endpoint_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::string problem_;
  int64_t nextRequestId_ = 1;
};

/// Name of a mode on the wire: "generate", "inpaint", "continue", "transform".
const char* modeName(Mode mode) noexcept;

/// The minor of a "MAJOR.MINOR" version ("1.4" -> 4); -1 when it is not one.
int protocolMinor(const std::string& version) noexcept;

}  // namespace sa3
