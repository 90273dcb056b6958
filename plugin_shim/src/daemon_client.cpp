// DaemonClient: docs/protocol.md over a ZeroMQ DEALER socket. Worker thread only.
#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST  // msgpack-cxx without Boost: only the header types we use
#endif
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <msgpack.hpp>
#include <thread>
#include <zmq.hpp>

#include "sa3/protocol.h"

namespace sa3 {

const char* modeName(Mode mode) noexcept {
  switch (mode) {
    case Mode::Generate:
      return "generate";
    case Mode::Inpaint:
      return "inpaint";
    case Mode::Continue:
      return "continue";
    case Mode::Transform:
      return "transform";
  }
  return "inpaint";
}

int protocolMinor(const std::string& version) noexcept {
  const auto dot = version.find('.');
  if (dot == std::string::npos || dot + 1 >= version.size()) return -1;
  int minor = 0;
  for (size_t i = dot + 1; i < version.size(); ++i) {
    if (version[i] < '0' || version[i] > '9' || minor > 100000) return -1;
    minor = minor * 10 + (version[i] - '0');
  }
  return minor;
}

namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

/// A header map being written: counts its entries so the map size is exact.
struct HeaderWriter {
  msgpack::sbuffer body;
  Packer pk{body};
  uint32_t count = 0;
  template <typename T>
  void field(const char* key, const T& value) {
    pk.pack(std::string(key));
    pk.pack(value);
    ++count;
  }
  std::vector<char> finish() const {
    msgpack::sbuffer out;
    Packer head(out);
    head.pack_map(count);
    std::vector<char> bytes(out.data(), out.data() + out.size());
    bytes.insert(bytes.end(), body.data(), body.data() + body.size());
    return bytes;
  }
};

const msgpack::object* lookup(const msgpack::object& map, const char* key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  const size_t len = std::strlen(key);
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && kv.key.via.str.size == len &&
        std::memcmp(kv.key.via.str.ptr, key, len) == 0)
      return &kv.val;
  }
  return nullptr;
}

std::string getString(const msgpack::object& map, const char* key) {
  const auto* v = lookup(map, key);
  if (v == nullptr || v->type != msgpack::type::STR) return {};
  return std::string(v->via.str.ptr, v->via.str.size);
}

int64_t getInt(const msgpack::object& map, const char* key, int64_t fallback) {
  const auto* v = lookup(map, key);
  if (v == nullptr) return fallback;
  if (v->type == msgpack::type::POSITIVE_INTEGER) return static_cast<int64_t>(v->via.u64);
  if (v->type == msgpack::type::NEGATIVE_INTEGER) return v->via.i64;
  return fallback;
}

double getDouble(const msgpack::object& map, const char* key, double fallback) {
  const auto* v = lookup(map, key);
  if (v == nullptr) return fallback;
  if (v->type == msgpack::type::FLOAT64 || v->type == msgpack::type::FLOAT32) return v->via.f64;
  if (v->type == msgpack::type::POSITIVE_INTEGER) return static_cast<double>(v->via.u64);
  if (v->type == msgpack::type::NEGATIVE_INTEGER) return static_cast<double>(v->via.i64);
  return fallback;
}

std::vector<std::string> getStrings(const msgpack::object& map, const char* key);

/// `capabilities.models` (added in 1.4): entries without a text `name` are skipped, as receivers
/// skip what they cannot read; unknown fields are ignored.
std::vector<ModelInfo> getModels(const msgpack::object& header) {
  std::vector<ModelInfo> models;
  const auto* list = lookup(header, "models");
  if (list == nullptr || list->type != msgpack::type::ARRAY) return models;
  for (uint32_t i = 0; i < list->via.array.size; ++i) {
    const msgpack::object& entry = list->via.array.ptr[i];
    ModelInfo model;
    model.name = getString(entry, "name");
    if (model.name.empty()) continue;
    model.family = getString(entry, "family");
    model.defaultSteps = static_cast<int>(getInt(entry, "default_steps", 0));
    model.defaultCfg = getDouble(entry, "default_cfg", 0.0);
    model.maxSeconds = getDouble(entry, "max_seconds", 0.0);
    model.steering = getStrings(entry, "steering");
    models.push_back(std::move(model));
  }
  return models;
}

std::vector<std::string> getStrings(const msgpack::object& map, const char* key) {
  std::vector<std::string> out;
  const auto* list = lookup(map, key);
  if (list == nullptr || list->type != msgpack::type::ARRAY) return out;
  for (uint32_t k = 0; k < list->via.array.size; ++k)
    if (list->via.array.ptr[k].type == msgpack::type::STR)
      out.emplace_back(list->via.array.ptr[k].via.str.ptr, list->via.array.ptr[k].via.str.size);
  return out;
}

/// `capabilities.loras` (added in 1.5): entries without a text `name` are skipped; a nil `rank` or
/// `adapter_type` (a file sa3 cannot read) reads as 0 and "".
std::vector<LoraInfo> getLoras(const msgpack::object& header) {
  std::vector<LoraInfo> loras;
  const auto* list = lookup(header, "loras");
  if (list == nullptr || list->type != msgpack::type::ARRAY) return loras;
  for (uint32_t i = 0; i < list->via.array.size; ++i) {
    const msgpack::object& entry = list->via.array.ptr[i];
    LoraInfo lora;
    lora.name = getString(entry, "name");
    if (lora.name.empty()) continue;
    lora.file = getString(entry, "file");
    lora.rank = static_cast<int>(std::max<int64_t>(0, getInt(entry, "rank", 0)));
    lora.adapterType = getString(entry, "adapter_type");
    lora.fits = getStrings(entry, "fits");
    loras.push_back(std::move(lora));
  }
  return loras;
}

/// A result's `loras` (added in 1.5): false when absent or not a list of {name, strength} maps
/// with text names and numeric strengths (the caller then keeps what it asked for).
bool getUsedLoras(const msgpack::object& header, std::vector<LoraUse>& out) {
  out.clear();
  const auto* list = lookup(header, "loras");
  if (list == nullptr || list->type != msgpack::type::ARRAY) return false;
  for (uint32_t i = 0; i < list->via.array.size; ++i) {
    const msgpack::object& entry = list->via.array.ptr[i];
    const auto* strength = lookup(entry, "strength");
    LoraUse use;
    use.name = getString(entry, "name");
    use.strength = getDouble(entry, "strength", std::numeric_limits<double>::quiet_NaN());
    if (use.name.empty() || strength == nullptr || !std::isfinite(use.strength)) {
      out.clear();
      return false;
    }
    out.push_back(std::move(use));
  }
  return true;
}

void splitPlanar(const zmq::message_t& frame, int channels, int64_t samples, std::vector<float>& left,
                 std::vector<float>& right) {
  const size_t expected = static_cast<size_t>(channels) * static_cast<size_t>(samples) * sizeof(float);
  if (samples <= 0 || (channels != 1 && channels != 2) || frame.size() != expected) return;
  left.resize(static_cast<size_t>(samples));
  right.resize(static_cast<size_t>(samples));
  const char* data = static_cast<const char*>(frame.data());
  // The wire is little-endian float32; so is every platform a DAW runs on.
  std::memcpy(left.data(), data, left.size() * sizeof(float));
  std::memcpy(right.data(), data + (channels == 2 ? left.size() * sizeof(float) : 0), right.size() * sizeof(float));
}

}  // namespace

DaemonClient::DaemonClient(std::string endpoint)
    : endpoint_(std::move(endpoint)), context_(std::make_unique<zmq::context_t>(1)) {
  reconnect();
}

DaemonClient::~DaemonClient() {
  socket_.reset();
  context_.reset();
}

void DaemonClient::reconnect() {
  if (socket_) socket_->close();
  socket_.reset();
  auto socket = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
  socket->set(zmq::sockopt::linger, 0);     // never block shutdown on unsent audio
  socket->set(zmq::sockopt::immediate, 1);  // queue nothing for a peer that is not there
  socket->set(zmq::sockopt::reconnect_ivl, 100);
  socket->set(zmq::sockopt::reconnect_ivl_max, 1000);
  socket->set(zmq::sockopt::sndtimeo, 0);  // sends never wait: a full queue drops the message
  try {
    socket->connect(endpoint_);
  } catch (const zmq::error_t& err) {
    // The endpoint comes from the user (editor, state, SA3_ENDPOINT): never let it end the host.
    problem_ = "the daemon endpoint '" + endpoint_ + "' is not valid (" + err.what() +
               "); use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5557";
    return;
  }
  problem_.clear();
  socket_ = std::move(socket);
}

void DaemonClient::sendHeader(const std::vector<char>& header, const std::vector<float>* left,
                              const std::vector<float>* right) {
  if (!socket_) return;
  const bool hasAudio = left != nullptr && right != nullptr && !left->empty();
  zmq::message_t head(header.data(), header.size());
  auto sent =
      socket_->send(head, hasAudio ? zmq::send_flags::sndmore | zmq::send_flags::dontwait : zmq::send_flags::dontwait);
  if (!sent || !hasAudio) return;
  const size_t n = left->size();
  zmq::message_t audio(2 * n * sizeof(float));
  char* out = static_cast<char*>(audio.data());
  std::memcpy(out, left->data(), n * sizeof(float));
  std::memcpy(out + n * sizeof(float), right->data(), n * sizeof(float));
  (void)socket_->send(audio, zmq::send_flags::dontwait);
}

void DaemonClient::sendHello() {
  HeaderWriter h;
  h.field("type", std::string("hello"));
  h.field("v", std::string(SA3_PROTOCOL_VERSION));
  h.field("client", std::string("sa3 plugin_shim"));
  sendHeader(h.finish(), nullptr, nullptr);
}

void DaemonClient::sendHeartbeat() {
  HeaderWriter h;
  h.field("type", std::string("heartbeat"));
  h.field("v", std::string(SA3_PROTOCOL_VERSION));
  sendHeader(h.finish(), nullptr, nullptr);
}

int64_t DaemonClient::submit(const RenderRequest& request) {
  const int64_t requestId = nextRequestId_++;
  HeaderWriter h;
  h.field("type", std::string(modeName(request.mode)));
  h.field("v", std::string(SA3_PROTOCOL_VERSION));
  h.field("request_id", requestId);
  h.field("prompt", request.prompt);
  if (!request.negativePrompt.empty()) h.field("negative_prompt", request.negativePrompt);   // added in 1.4
  if (!request.model.empty()) h.field("model", request.model);                               // added in 1.4
  if (request.mode == Mode::Transform) h.field("init_noise_level", request.initNoiseLevel);  // added in 1.4
  if (!request.loras.empty()) {  // added in 1.5: [{name, strength}] in the order they apply
    h.pk.pack(std::string("loras"));
    h.pk.pack_array(static_cast<uint32_t>(request.loras.size()));
    for (const auto& lora : request.loras) {
      h.pk.pack_map(2);
      h.pk.pack(std::string("name"));
      h.pk.pack(lora.name);
      h.pk.pack(std::string("strength"));
      h.pk.pack(lora.strength);
    }
    ++h.count;
  }
  h.field("sample_rate", request.sampleRate);
  h.field("seed", static_cast<uint64_t>(request.seed));
  if (request.steps > 0) h.field("steps", request.steps);
  if (request.scaleLockDb >= 0.0) h.field("scale_lock_db", request.scaleLockDb);  // added in 1.1
  if (request.exactLength) h.field("exact_length", true);                         // added in 1.6
  h.field("progress", true);
  if (request.bpm > 0.0) {  // the model keeps the song's beat, with a downbeat at the clip's first sample
    h.field("bpm", request.bpm);
    h.field("meter", std::to_string(request.meterNumerator) + "/" + std::to_string(request.meterDenominator));
  }
  const bool hasAudio = request.mode != Mode::Generate;
  // generate and continue say how much new audio; inpaint and transform keep the input's length
  if (request.mode == Mode::Generate || request.mode == Mode::Continue) h.field("samples", request.newSamples);
  if (hasAudio) {
    h.pk.pack(std::string("audio"));
    h.pk.pack_map(3);
    h.pk.pack(std::string("sample_rate"));
    h.pk.pack(request.sampleRate);
    h.pk.pack(std::string("channels"));
    h.pk.pack(2);
    h.pk.pack(std::string("samples"));
    h.pk.pack(static_cast<int64_t>(request.left.size()));
    ++h.count;
  }
  if (request.mode == Mode::Inpaint) {
    h.pk.pack(std::string("regions"));
    h.pk.pack_array(1);
    h.pk.pack_array(2);
    h.pk.pack(request.regionStart);
    h.pk.pack(request.regionEnd);
    ++h.count;
  }
  sendHeader(h.finish(), hasAudio ? &request.left : nullptr, hasAudio ? &request.right : nullptr);
  return requestId;
}

void DaemonClient::cancel(const std::string& jobId) {
  HeaderWriter h;
  h.field("type", std::string("cancel"));
  h.field("v", std::string(SA3_PROTOCOL_VERSION));
  h.field("job_id", jobId);
  sendHeader(h.finish(), nullptr, nullptr);
}

int64_t DaemonClient::fetch(const std::string& jobId) {
  const int64_t requestId = nextRequestId_++;
  HeaderWriter h;
  h.field("type", std::string("fetch"));
  h.field("v", std::string(SA3_PROTOCOL_VERSION));
  h.field("request_id", requestId);
  h.field("job_id", jobId);
  sendHeader(h.finish(), nullptr, nullptr);
  return requestId;
}

bool DaemonClient::receive(int timeoutMs, DaemonEvent& event) {
  if (!socket_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(timeoutMs));  // as a poll that hears nothing
    return false;
  }
  zmq::pollitem_t item{static_cast<void*>(*socket_), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(timeoutMs)) <= 0) return false;
  std::vector<zmq::message_t> frames;
  while (true) {
    zmq::message_t frame;
    if (!socket_->recv(frame, zmq::recv_flags::dontwait)) break;
    const bool more = frame.more();
    frames.push_back(std::move(frame));
    if (!more) break;
  }
  if (frames.empty()) return false;
  event = DaemonEvent{};
  try {
    const auto handle = msgpack::unpack(static_cast<const char*>(frames[0].data()), frames[0].size());
    const msgpack::object& header = handle.get();
    const std::string type = getString(header, "type");
    event.requestId = getInt(header, "request_id", -1);
    event.jobId = getString(header, "job_id");
    event.daemonId = getString(header, "daemon_id");  // added in 1.3
    if (type == "capabilities") {
      event.kind = DaemonEvent::Kind::Capabilities;
      event.defaultSteps = static_cast<int>(getInt(header, "default_steps", 0));
      event.version = getString(header, "v");
      event.models = getModels(header);  // added in 1.4
      event.loras = getLoras(header);    // added in 1.5
      event.maxLoras = static_cast<int>(std::max<int64_t>(0, getInt(header, "max_loras", 0)));
    }
    if (type == "heartbeat") event.kind = DaemonEvent::Kind::Heartbeat;
    if (type == "queued") event.kind = DaemonEvent::Kind::Queued;
    if (type == "cancelled") event.kind = DaemonEvent::Kind::Cancelled;
    if (type == "shutdown") event.kind = DaemonEvent::Kind::Shutdown;
    if (type == "progress") {
      event.kind = DaemonEvent::Kind::Progress;
      event.step = static_cast<int>(getInt(header, "step", 0));
      event.total = static_cast<int>(getInt(header, "total", 0));
    }
    if (type == "error") {
      event.kind = DaemonEvent::Kind::Error;
      event.code = getString(header, "code");
      event.message = getString(header, "message");
    }
    if (type == "result") {
      event.kind = DaemonEvent::Kind::Result;
      event.stepsUsed = static_cast<int>(getInt(header, "steps", 0));
      event.model = getString(header, "model");                 // added in 1.4
      event.lorasSaid = getUsedLoras(header, event.usedLoras);  // added in 1.5
      const auto* audio = lookup(header, "audio");
      if (audio != nullptr && frames.size() >= 2) {
        event.sampleRate = static_cast<int>(getInt(*audio, "sample_rate", 0));
        splitPlanar(frames[1], static_cast<int>(getInt(*audio, "channels", 2)), getInt(*audio, "samples", 0),
                    event.left, event.right);
      }
      if (event.left.empty()) {
        event.kind = DaemonEvent::Kind::Error;
        event.code = "bad_audio";
        event.message = "the daemon's result had no readable audio frame";
      }
    }
  } catch (const std::exception&) {
    event.kind = DaemonEvent::Kind::Other;  // undecodable, but the daemon is alive
  }
  return true;
}

}  // namespace sa3
