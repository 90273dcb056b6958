// sa3 plugin core: the host-facing processor, without any JUCE dependency.
//
// Shaped like juce::AudioProcessor: prepareToPlay / processBlock / releaseResources /
// getStateInformation / setStateInformation. The JUCE VST3 wrapper (plugin_shim/juce/) and
// the pybind11 module (plugin_shim/python/) are thin layers over this class.
//
// What it does
//  - While the transport plays, captures the incoming audio into a buffer aligned to the host
//    timeline (sample t of the song goes to index t), preallocated in prepareToPlay.
//  - On requestRender(), a worker thread resolves the region (the host's loop range when
//    looping, else the bars set on the plugin; N bars from a bar line for generate/continue),
//    copies the captured context (inpaint, continue) or the selection itself (transform), sends
//    the request to the sa3 daemon (docs/protocol.md) on the chosen model and turns the reply
//    into a Take.
//  - Plays the active take sample-accurately at its timeline position, replacing the input
//    inside its region; the input passes through untouched everywhere else, while stopped,
//    and until a result is ready.
//  - Sends the LoRA adapters chosen in its slots (protocol 1.5) with every job, in slot order.
//  - Asks for exact length (protocol 1.6) when set: the released models make the region's length
//    without their 6 s of headroom.
//  - Keeps every take (prompt, negative prompt, model, LoRA adapters, exact length, seed, steps,
//    scale lock, init noise level, region, mode, audio) in the saved state.
//
// AUDIO-THREAD CONTRACT
//  processBlock(), reset(), requestRender(), cancelRender() and the numeric setters never
//  allocate, lock, wait or do I/O. They touch only memory preallocated in prepareToPlay and
//  std::atomic values. Results reach the audio thread as an atomic pointer to an immutable
//  Take; a take is only freed after the audio thread is seen outside processBlock (an epoch
//  counter it bumps on entry and exit), so the audio thread never waits for anyone.
//  Everything else (prepareToPlay, releaseResources, state, prompt, take management) is for
//  the message thread: it may allocate and lock, and never runs concurrently with itself
//  from two threads (the host serialises those calls, as JUCE requires).
//  tests/plugin_shim/test_realtime.py checks "no allocation on the audio thread" by running
//  a request through a build with a counting global operator new.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sa3/position.h"
#include "sa3/protocol.h"
#include "sa3/take.h"
#include "sa3/timebase.h"

namespace sa3 {

/// LoRA slots of the plugin (protocol 1.5): each names one adapter of the daemon's folder (or none)
/// and a strength; filled slots apply in slot order. Fewer than the daemon's max_loras (8).
constexpr int kLoraSlots = 4;
/// A slot's strength until set: the adapter as trained.
constexpr double kDefaultLoraStrength = 1.0;

/// Connection and job state, as shown to the user.
enum class Status : int {
  Offline = 0,    // no reply from the daemon (not started, killed, or unreachable)
  Idle = 1,       // connected, nothing rendering
  Rendering = 2,  // a request is in flight (see progress())
  Error = 3,      // the last request failed (statusText() says why); still connected
};

/// Fixed settings for the lifetime of a processor.
struct ProcessorConfig {
  std::string endpoint = "tcp://127.0.0.1:5557";  // the daemon's ROUTER socket (docs/protocol.md)
  double maxCaptureSeconds = timebase::kMaxSeconds;
  double contextSeconds = 10.0;   // captured audio sent on each side of an inpaint region
  int heartbeatMs = 500;          // how often an idle worker checks that the daemon is alive
  int offlineAfterMs = 2000;      // no reply for this long: report offline
  int requestTimeoutMs = 120000;  // a render with no progress for this long fails
};

/// The region and length a render would use now (for the UI, tests and the worker).
struct ResolvedRegion {
  timebase::Region region;  // host samples on the timeline
  double bpm = timebase::kDefaultBpm;
  timebase::Meter meter;
  bool fromHostLoop = false;  // true when the host's loop/cycle range set it
};

/// A plain copy of one take's description (no audio), for lists in the UI and Python.
struct TakeInfo {
  uint64_t id = 0;
  std::string prompt;
  uint64_t seed = 0;
  int steps = 0;              // as the daemon ran it (0: not known)
  double scaleLockDb = -1.0;  // < 0: the model's setting
  Mode mode = Mode::Inpaint;
  std::string model;            // "" : made by a daemon before 1.4, which names no model
  std::string negativePrompt;   // "" : none
  double initNoiseLevel = 0.0;  // transform takes only; 0 for the other modes
  std::vector<LoraUse> loras;   // the adapters that made it, in order (none: the base model)
  bool exactLength = false;     // made without the released models' 6 s headroom (protocol 1.6)
  double sampleRate = 0;
  int64_t start = 0, length = 0;
  double bpm = 0;
  timebase::Meter meter;
};

class Processor {
 public:
  explicit Processor(ProcessorConfig config = {});
  ~Processor();
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;

  // ---- lifecycle (message thread) ------------------------------------------------------
  /// Preallocates the capture buffer for maxCaptureSeconds at `sampleRate`. Captured audio
  /// and takes survive a second call at the same rate; takes are resampled to a new rate.
  void prepareToPlay(double sampleRate, int maxBlockSize);
  /// Stops processing; keeps captured audio and takes (they are the project's content).
  void releaseResources();

  // ---- audio thread ---------------------------------------------------------------------
  /// Processes `numSamples` samples of `numChannels` channels in place. Any block size works,
  /// including sizes above maxBlockSize. Where the position has no timeInSamples/ppq, a
  /// free-running timeline is used (started at 0 by reset()); a missing isPlaying counts as
  /// playing, so hosts without a transport still capture and play takes.
  void processBlock(float* const* channels, int numChannels, int numSamples, const PositionInfo& position) noexcept;
  /// Restarts the free-running timeline at 0 (any thread).
  void reset() noexcept;

  // ---- settings (any thread, lock-free) -------------------------------------------------
  void setMode(Mode mode) noexcept { mode_.store(static_cast<int>(mode)); }
  void setBpm(double bpm) noexcept { bpm_.store(bpm); }  // used when the host gives none
  void setMeter(int numerator, int denominator) noexcept;
  void setRegionBars(double startBar, double endBar) noexcept;  // 1-based, used when not looping
  void setBars(double bars) noexcept { bars_.store(bars); }     // fill length (generate/continue)
  void setSeed(uint64_t seed) noexcept { seed_.store(seed); }
  /// Sampler steps for the next renders; 0 or less: the model's default (the request leaves the
  /// field out; modelDefaultSteps() says what that is once the daemon has answered).
  void setSteps(int steps) noexcept { steps_.store(steps > 0 ? steps : 0); }
  /// Scale lock for the next renders: dB per sampler step by which notes outside a key the
  /// prompt names are turned down (0 = off, up to kMaxScaleLockDb in sa3/protocol.h). Any
  /// negative value or NaN means the model's own setting: the request leaves the field out.
  void setScaleLockDb(double db) noexcept { scaleLockDb_.store(db >= 0.0 ? db : -1.0); }
  /// Transform's init noise level for the next renders (kMinInitNoiseLevel to 1 in sa3/take.h;
  /// a render with a value outside that stops with a status line).
  void setInitNoiseLevel(double level) noexcept { initNoiseLevel_.store(level); }
  /// Exact length for the next renders (protocol 1.6, any mode; off by default): the released
  /// models make exactly the region's length instead of padding every take with 6 s of headroom,
  /// faster for short takes, and another take for the same seed (they were trained with the
  /// headroom). sa3's own models always make the exact length: for them it changes nothing. Sent
  /// only when on; a daemon before 1.6, or a model whose steering lacks it, stops the render with a
  /// status line.
  void setExactLength(bool on) noexcept { exactLength_.store(on); }
  Mode mode() const noexcept { return static_cast<Mode>(mode_.load()); }
  double bpm() const noexcept { return bpm_.load(); }
  timebase::Meter meter() const noexcept;
  double regionStartBar() const noexcept { return startBar_.load(); }
  double regionEndBar() const noexcept { return endBar_.load(); }
  double bars() const noexcept { return bars_.load(); }
  uint64_t seed() const noexcept { return seed_.load(); }
  int steps() const noexcept { return steps_.load(); }                 // 0: the model's default
  double scaleLockDb() const noexcept { return scaleLockDb_.load(); }  // -1: the model's setting
  double initNoiseLevel() const noexcept { return initNoiseLevel_.load(); }
  bool exactLength() const noexcept { return exactLength_.load(); }

  /// The text prompt (message thread; not a numeric parameter, saved in the state).
  void setPrompt(const std::string& prompt);
  std::string prompt() const;
  /// The daemon's endpoint (message thread; saved in the state). The worker reconnects to it.
  void setEndpoint(const std::string& endpoint);
  std::string endpoint() const;
  /// What guidance steers away from (message thread; saved in the state). Sent with every job
  /// when not empty (protocol 1.4); the daemon uses it when the model guides (cfg not 1).
  void setNegativePrompt(const std::string& negativePrompt);
  std::string negativePrompt() const;

  // ---- the daemon's models (message thread) ---------------------------------------------
  /// The model every job runs on, by the name the daemon lists; "" (the default) means the
  /// daemon's default, the first it lists, which the job then names. Saved in the state. A
  /// name the daemon does not serve stops the render with a status line that says so.
  void setModel(const std::string& name);
  std::string model() const;
  /// The models the daemon serves, the default first, from its last `capabilities` reply (empty
  /// until it answers, and from a daemon before 1.4). modelsSerial() changes whenever they do.
  std::vector<ModelInfo> models() const;
  uint64_t modelsSerial() const noexcept { return modelsSerial_.load(); }
  /// The daemon's protocol version from its `capabilities` reply; "" until it answers.
  std::string daemonVersion() const;
  /// Default steps of the model the next render runs on (the chosen one, else the daemon's
  /// default), from the `capabilities` reply; 0 until it arrives.
  int modelDefaultSteps() const;

  // ---- LoRA adapters (protocol 1.5) -----------------------------------------------------
  /// The adapter in `slot` (0 to kLoraSlots - 1) by the name the daemon lists; "" = none. Message
  /// thread; saved in the state. Out-of-range slots are ignored.
  void setLoraSlot(int slot, const std::string& name);
  std::string loraSlot(int slot) const;  // "" for none or an out-of-range slot
  /// The strength of `slot`'s adapter, -kMaxLoraStrength to kMaxLoraStrength (0 leaves it out).
  /// Any thread, lock-free (an automatable parameter); a render with a value outside that range,
  /// or NaN, stops with a status line.
  void setLoraStrength(int slot, double strength) noexcept;
  double loraStrength(int slot) const noexcept;  // kDefaultLoraStrength for an out-of-range slot
  /// What the next job sends: the filled slots with a strength other than 0, in slot order.
  std::vector<LoraUse> chosenLoras() const;
  /// The adapters in the daemon's LoRA folder, from its last `capabilities` reply (empty until it
  /// answers, and from a daemon before 1.5). lorasSerial() changes whenever they or the slots do.
  std::vector<LoraInfo> loras() const;
  uint64_t lorasSerial() const noexcept { return lorasSerial_.load(); }
  /// Adapters one job may name, from the `capabilities` reply; 0 until it answers (and before 1.5).
  int maxLoras() const;
  /// The model the next job runs on: the chosen one, else the daemon's default (its first); "" while
  /// neither is known (no `capabilities` yet, or a daemon before 1.4).
  std::string jobModel() const;

  // ---- rendering ------------------------------------------------------------------------
  /// Asks the worker to render with the current settings and host position (any thread,
  /// lock-free: it bumps a counter the worker polls). A render in flight is replaced.
  void requestRender() noexcept { renderSerial_.fetch_add(1); }
  void cancelRender() noexcept { cancelSerial_.fetch_add(1); }
  /// Region the next render would use, from the last host position processBlock saw.
  ResolvedRegion resolveRegion() const noexcept;

  Status status() const noexcept { return static_cast<Status>(status_.load()); }
  bool online() const noexcept { return status() != Status::Offline; }
  float progress() const noexcept { return progress_.load(); }  // 0..1 of the render in flight
  std::string statusText() const;
  uint64_t rendersCompleted() const noexcept { return rendersCompleted_.load(); }

  // ---- takes (message thread) -----------------------------------------------------------
  size_t numTakes() const;
  TakeInfo takeInfo(size_t index) const;
  std::vector<float> takeAudio(size_t index, int channel) const;
  /// Which take plays: an index into the take list, or -1 for none (dry input only).
  void selectTake(int index);
  int activeTake() const;
  void deleteTake(size_t index);

  // ---- state (message thread) -----------------------------------------------------------
  /// Settings, prompt, every take and which one plays, as a versioned binary blob.
  std::vector<uint8_t> getStateInformation() const;
  /// Restores a blob from getStateInformation. Returns false and changes nothing when the
  /// data is not a valid sa3 state of a known version.
  bool setStateInformation(const void* data, size_t size);

  double sampleRate() const noexcept { return sampleRate_.load(); }
  int64_t timelinePosition() const noexcept { return lastTimeline_.load(); }

 private:
  struct HostSnapshot;
  struct Capture;
  struct Job;

  void workerLoop();
  std::string buildJob(Job& job) const;  // "" or why the render cannot start
  // "" when the daemon can run `request` as asked, else why not; `modelName`: the model the job names
  // (request.model, or the daemon's default for "")
  std::string checkAgainstDaemon(const RenderRequest& request, std::string& modelName) const;
  void takeCapabilities(const DaemonEvent& event);
  bool daemonKnown() const;  // a `capabilities` reply arrived from the daemon at the endpoint
  void forgetDaemon();       // another endpoint: nothing is known about the daemon there
  void finishJob(Job& job, DaemonEvent& result);
  void waitForAudioThreadToLeaveBlock() const;
  void setStatus(Status status, const std::string& text);
  bool copyContext(int64_t start, int64_t end, std::vector<float>& left, std::vector<float>& right) const;

  const ProcessorConfig config_;

  // numeric settings
  std::atomic<int> mode_{static_cast<int>(Mode::Inpaint)};
  std::atomic<double> bpm_{timebase::kDefaultBpm};
  std::atomic<int> meterNumerator_{4}, meterDenominator_{4};
  std::atomic<double> startBar_{1.0}, endBar_{5.0}, bars_{4.0};
  std::atomic<uint64_t> seed_{0};
  std::atomic<int> steps_{0};              // 0: the model's default
  std::atomic<double> scaleLockDb_{-1.0};  // < 0: the model's setting
  std::atomic<double> initNoiseLevel_{kDefaultInitNoiseLevel};
  std::atomic<bool> exactLength_{false};
  std::atomic<double> loraStrengths_[kLoraSlots];  // set to kDefaultLoraStrength in the constructor

  // host position seen by the last processBlock (written by the audio thread only)
  std::unique_ptr<HostSnapshot> host_;
  std::atomic<int64_t> freeRunning_{0};
  std::atomic<int64_t> lastTimeline_{0};

  // capture: atomics so the worker may copy while the audio thread writes, race free
  std::unique_ptr<Capture> capture_;
  mutable std::mutex captureMutex_;  // worker copy vs prepareToPlay; never the audio thread
  std::atomic<double> sampleRate_{0.0};

  // takes
  mutable std::mutex takesMutex_;  // never taken by the audio thread
  std::vector<std::shared_ptr<const Take>> takes_;
  int activeIndex_ = -1;
  uint64_t nextTakeId_ = 1;
  std::atomic<const Take*> active_{nullptr};  // what the audio thread plays
  std::atomic<uint64_t> audioEpoch_{0};       // odd while inside processBlock

  // prompt, model choice, what the daemon said and status text (message/worker threads)
  mutable std::mutex textMutex_;
  std::string prompt_ = "warm analog synth pad";
  std::string negativePrompt_;
  std::string model_;  // "" : the daemon's default
  std::string endpoint_;
  bool daemonKnown_ = false;  // a `capabilities` reply arrived from the daemon at endpoint_
  std::string daemonVersion_;
  int daemonDefaultSteps_ = 0;           // the top-level `default_steps` (the default model's)
  std::vector<ModelInfo> daemonModels_;  // empty before 1.4
  std::vector<LoraInfo> daemonLoras_;    // empty before 1.5
  int daemonMaxLoras_ = 0;               // 0: not said (before 1.5)
  std::string loraSlots_[kLoraSlots];    // "" : none
  std::atomic<uint64_t> modelsSerial_{0};
  std::atomic<uint64_t> lorasSerial_{0};
  std::atomic<uint64_t> endpointSerial_{0};
  std::string statusText_ = "offline";

  // worker
  std::atomic<uint64_t> renderSerial_{0}, cancelSerial_{0};
  std::atomic<int> status_{static_cast<int>(Status::Offline)};
  std::atomic<float> progress_{0.0f};
  std::atomic<uint64_t> rendersCompleted_{0};
  std::atomic<bool> quit_{false};
  std::thread worker_;
};

}  // namespace sa3
