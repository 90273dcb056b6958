// sa3::Processor: capture, region math, worker, take playback. See processor.h for the
// audio-thread contract; functions marked [audio] follow it.
#include "sa3/processor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "sa3/protocol.h"

namespace sa3 {

using Clock = std::chrono::steady_clock;
namespace tb = timebase;

static_assert(std::atomic<float>::is_always_lock_free, "capture needs lock-free float atomics");
static_assert(std::atomic<double>::is_always_lock_free, "settings need lock-free double atomics");
static_assert(std::atomic<bool>::is_always_lock_free, "settings need lock-free bool atomics");
static_assert(kLoraSlots <= kMaxLoras, "every slot must fit in one job");

// ---- host position, written by the audio thread, read by the worker -----------------------
// A sequence lock over atomics: the writer never waits; a reader retries on a torn read.
struct Processor::HostSnapshot {
  struct Values {
    double bpm = std::numeric_limits<double>::quiet_NaN();
    int numerator = 0, denominator = 0;
    bool looping = false;
    double loopStart = std::numeric_limits<double>::quiet_NaN();
    double loopEnd = std::numeric_limits<double>::quiet_NaN();
  };
  std::atomic<uint32_t> sequence{0};
  std::atomic<double> bpm{std::numeric_limits<double>::quiet_NaN()};
  std::atomic<int> numerator{0}, denominator{0};
  std::atomic<bool> looping{false};
  std::atomic<double> loopStart{std::numeric_limits<double>::quiet_NaN()};
  std::atomic<double> loopEnd{std::numeric_limits<double>::quiet_NaN()};

  void publish(const PositionInfo& p) noexcept {  // [audio]
    constexpr double nan = std::numeric_limits<double>::quiet_NaN();
    const uint32_t s = sequence.load(std::memory_order_relaxed);
    sequence.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    bpm.store(p.bpm.value_or(nan), std::memory_order_relaxed);
    numerator.store(p.timeSigNumerator.value_or(0), std::memory_order_relaxed);
    denominator.store(p.timeSigDenominator.value_or(0), std::memory_order_relaxed);
    looping.store(p.isLooping.value_or(false), std::memory_order_relaxed);
    loopStart.store(p.loopStartPpq.value_or(nan), std::memory_order_relaxed);
    loopEnd.store(p.loopEndPpq.value_or(nan), std::memory_order_relaxed);
    sequence.store(s + 2, std::memory_order_release);
  }

  Values read() const noexcept {
    Values v;
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const uint32_t s1 = sequence.load(std::memory_order_acquire);
      if (s1 & 1u) continue;
      v.bpm = bpm.load(std::memory_order_relaxed);
      v.numerator = numerator.load(std::memory_order_relaxed);
      v.denominator = denominator.load(std::memory_order_relaxed);
      v.looping = looping.load(std::memory_order_relaxed);
      v.loopStart = loopStart.load(std::memory_order_relaxed);
      v.loopEnd = loopEnd.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (sequence.load(std::memory_order_relaxed) == s1) break;
    }
    return v;
  }
};

// ---- capture buffer: host timeline sample t lives at index t ------------------------------
struct Processor::Capture {
  explicit Capture(int64_t samples)
      : capacity(samples),
        left(new std::atomic<float>[static_cast<size_t>(samples)]),
        right(new std::atomic<float>[static_cast<size_t>(samples)]) {
    for (int64_t i = 0; i < samples; ++i) {
      left[i].store(0.0f, std::memory_order_relaxed);
      right[i].store(0.0f, std::memory_order_relaxed);
    }
  }
  const int64_t capacity;
  std::unique_ptr<std::atomic<float>[]> left, right;
};

// ---- a render the worker is looking after --------------------------------------------------
struct Processor::Job {
  RenderRequest request;
  Take description;           // everything but the audio; start = region start on the timeline
  int64_t windowSamples = 0;  // input clip length (inpaint/continue)
  int64_t requestId = -1;
  std::string jobId;     // from `queued`
  std::string daemonId;  // the daemon instance it went to, then the one that queued it (protocol 1.3; "" before)
  Clock::time_point lastHeard;
  bool submitted = false;
  bool resubmitted = false;
};

Processor::Processor(ProcessorConfig config)
    : config_(std::move(config)), host_(std::make_unique<HostSnapshot>()), endpoint_(config_.endpoint) {
  for (auto& strength : loraStrengths_) strength.store(kDefaultLoraStrength);
  worker_ = std::thread([this] { workerLoop(); });
}

Processor::~Processor() {
  quit_.store(true);
  if (worker_.joinable()) worker_.join();
  active_.store(nullptr);
}

// ---- lifecycle -----------------------------------------------------------------------------
void Processor::prepareToPlay(double sampleRate, int /*maxBlockSize*/) {
  const double previousRate = sampleRate_.load();
  {
    std::lock_guard<std::mutex> lock(captureMutex_);
    const int64_t capacity = tb::secondsToSamples(config_.maxCaptureSeconds, sampleRate);
    if (!capture_ || capture_->capacity != capacity || previousRate != sampleRate)
      capture_ = std::make_unique<Capture>(capacity);
    sampleRate_.store(sampleRate);
  }
  if (previousRate == sampleRate) return;
  // Takes rendered at another rate: resample once here so the audio thread plays them as is.
  std::vector<std::shared_ptr<const Take>> old;
  std::lock_guard<std::mutex> lock(takesMutex_);
  for (auto& take : takes_) {
    if (take->sampleRate == sampleRate) continue;
    old.push_back(take);
    take = std::make_shared<const Take>(resampleTake(*take, sampleRate));
  }
  const Take* playing = activeIndex_ >= 0 ? takes_[static_cast<size_t>(activeIndex_)].get() : nullptr;
  active_.store(playing);
  waitForAudioThreadToLeaveBlock();  // only then may `old` be freed (at scope exit)
}

void Processor::releaseResources() {
  // Captured audio and takes are the project's content, not scratch memory: keep them.
}

// ---- audio thread ---------------------------------------------------------------------------
void Processor::reset() noexcept { freeRunning_.store(0); }

void Processor::processBlock(float* const* channels, int numChannels, int numSamples,
                             const PositionInfo& position) noexcept {
  audioEpoch_.fetch_add(1);  // odd: inside processBlock
  const double rate = sampleRate_.load(std::memory_order_relaxed);
  if (numSamples <= 0 || numChannels <= 0 || rate <= 0.0 || channels == nullptr) {
    audioEpoch_.fetch_add(1);
    return;
  }
  const double paramBpm = bpm_.load(std::memory_order_relaxed);
  const double bpm = position.bpm && tb::validBpm(*position.bpm)
                         ? *position.bpm
                         : (tb::validBpm(paramBpm) ? paramBpm : tb::kDefaultBpm);
  int64_t timeline;
  if (position.timeInSamples)
    timeline = *position.timeInSamples;
  else if (position.ppqPosition)
    timeline = tb::ppqToSamples(*position.ppqPosition, bpm, rate);
  else
    timeline = freeRunning_.load(std::memory_order_relaxed);
  const bool playing = position.isPlaying.value_or(true);
  host_->publish(position);

  if (playing) {
    // Capture the dry input first: the output below overwrites the same buffer.
    Capture* capture = capture_.get();
    if (capture != nullptr) {
      const int64_t from = std::max<int64_t>(timeline, 0);
      const int64_t to = std::min<int64_t>(timeline + numSamples, capture->capacity);
      const float* inLeft = channels[0];
      const float* inRight = channels[numChannels > 1 ? 1 : 0];
      for (int64_t t = from; t < to; ++t) {
        capture->left[t].store(inLeft[t - timeline], std::memory_order_relaxed);
        capture->right[t].store(inRight[t - timeline], std::memory_order_relaxed);
      }
    }
    // Replace the input by the active take where the block overlaps its region.
    const Take* take = active_.load();
    if (take != nullptr && take->sampleRate == rate) {
      const int64_t from = std::max<int64_t>(timeline, take->start);
      const int64_t to = std::min<int64_t>(timeline + numSamples, take->start + take->length());
      const float* takeLeft = take->left.data();
      const float* takeRight = take->right.data();
      for (int64_t t = from; t < to; ++t) {
        const int64_t i = t - take->start;
        const int64_t o = t - timeline;
        if (numChannels == 1) {
          channels[0][o] = 0.5f * (takeLeft[i] + takeRight[i]);
          continue;
        }
        channels[0][o] = takeLeft[i];
        channels[1][o] = takeRight[i];
        for (int c = 2; c < numChannels; ++c) channels[c][o] = 0.0f;
      }
    }
    freeRunning_.store(timeline + numSamples, std::memory_order_relaxed);
  }
  lastTimeline_.store(timeline + (playing ? numSamples : 0), std::memory_order_relaxed);
  audioEpoch_.fetch_add(1);  // even: outside
}

void Processor::waitForAudioThreadToLeaveBlock() const {
  const uint64_t epoch = audioEpoch_.load();
  if ((epoch & 1u) == 0) return;
  while (audioEpoch_.load() == epoch) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

// ---- settings --------------------------------------------------------------------------------
void Processor::setMeter(int numerator, int denominator) noexcept {
  meterNumerator_.store(numerator);
  meterDenominator_.store(denominator);
}

tb::Meter Processor::meter() const noexcept { return {meterNumerator_.load(), meterDenominator_.load()}; }

void Processor::setRegionBars(double startBar, double endBar) noexcept {
  startBar_.store(startBar);
  endBar_.store(endBar);
}

void Processor::setPrompt(const std::string& prompt) {
  std::lock_guard<std::mutex> lock(textMutex_);
  prompt_ = prompt;
}

std::string Processor::prompt() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return prompt_;
}

void Processor::setEndpoint(const std::string& endpoint) {
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    if (endpoint == endpoint_) return;
    endpoint_ = endpoint;
  }
  endpointSerial_.fetch_add(1);
}

std::string Processor::endpoint() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return endpoint_;
}

void Processor::setNegativePrompt(const std::string& negativePrompt) {
  std::lock_guard<std::mutex> lock(textMutex_);
  negativePrompt_ = negativePrompt;
}

std::string Processor::negativePrompt() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return negativePrompt_;
}

// ---- the daemon's models ---------------------------------------------------------------------
void Processor::setModel(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    if (name == model_) return;
    model_ = name;
  }
  modelsSerial_.fetch_add(1);  // the menu shows the choice
}

std::string Processor::model() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return model_;
}

std::vector<ModelInfo> Processor::models() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return daemonModels_;
}

std::string Processor::daemonVersion() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return daemonVersion_;
}

int Processor::modelDefaultSteps() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  if (model_.empty()) return daemonDefaultSteps_;  // the top-level fields describe the default model
  for (const auto& m : daemonModels_)
    if (m.name == model_) return m.defaultSteps;
  return 0;  // a model the daemon does not serve: not known
}

// ---- LoRA adapters ---------------------------------------------------------------------------
namespace {
bool validSlot(int slot) { return slot >= 0 && slot < kLoraSlots; }

/// Adapter names match in any case (docs/protocol.md 4.12); the daemon lists them in lower case.
std::string lowerCase(std::string text) {
  for (char& c : text)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return text;
}

bool validStrength(double strength) { return std::isfinite(strength) && std::fabs(strength) <= kMaxLoraStrength; }

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}
}  // namespace

void Processor::setLoraSlot(int slot, const std::string& name) {
  if (!validSlot(slot)) return;
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    if (loraSlots_[slot] == name) return;
    loraSlots_[slot] = name;
  }
  lorasSerial_.fetch_add(1);  // the menus show the choice
}

std::string Processor::loraSlot(int slot) const {
  if (!validSlot(slot)) return {};
  std::lock_guard<std::mutex> lock(textMutex_);
  return loraSlots_[slot];
}

void Processor::setLoraStrength(int slot, double strength) noexcept {
  if (validSlot(slot)) loraStrengths_[slot].store(strength);
}

double Processor::loraStrength(int slot) const noexcept {
  return validSlot(slot) ? loraStrengths_[slot].load() : kDefaultLoraStrength;
}

std::vector<LoraUse> Processor::chosenLoras() const {
  std::vector<LoraUse> chosen;
  std::lock_guard<std::mutex> lock(textMutex_);
  for (int slot = 0; slot < kLoraSlots; ++slot) {
    const double strength = loraStrengths_[slot].load();
    if (!loraSlots_[slot].empty() && strength != 0.0) chosen.push_back({loraSlots_[slot], strength});
  }
  return chosen;
}

std::vector<LoraInfo> Processor::loras() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return daemonLoras_;
}

int Processor::maxLoras() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return daemonMaxLoras_;
}

std::string Processor::jobModel() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  if (!model_.empty()) return model_;
  return daemonModels_.empty() ? std::string() : daemonModels_.front().name;
}

void Processor::takeCapabilities(const DaemonEvent& event) {
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    daemonKnown_ = true;
    daemonVersion_ = event.version;
    daemonDefaultSteps_ = event.defaultSteps;
    daemonModels_ = event.models;
    daemonLoras_ = event.loras;
    daemonMaxLoras_ = event.maxLoras;
  }
  modelsSerial_.fetch_add(1);
  lorasSerial_.fetch_add(1);
}

void Processor::forgetDaemon() {
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    daemonKnown_ = false;
    daemonVersion_.clear();
    daemonDefaultSteps_ = 0;
    daemonModels_.clear();
    daemonLoras_.clear();
    daemonMaxLoras_ = 0;
  }
  modelsSerial_.fetch_add(1);
  lorasSerial_.fetch_add(1);
}

bool Processor::daemonKnown() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return daemonKnown_;
}

std::string Processor::checkAgainstDaemon(const RenderRequest& request, std::string& modelName) const {
  std::lock_guard<std::mutex> lock(textMutex_);
  modelName = request.model;
  // Not heard from yet: send as chosen; the daemon itself refuses a model it does not serve
  // (bad_field, naming the ones it does), and its capabilities reply fills the menu. (A job with
  // LoRA adapters or exact length is not sent before that reply: the worker waits for it.)
  if (!daemonKnown_) return {};
  const int minor = protocolMinor(daemonVersion_);
  const std::string speaks = "the daemon at " + endpoint_ + " speaks protocol " + daemonVersion_ + ", which has ";
  if (minor >= 0 && minor < 4) {  // a 1.3 daemon ignores model and negative_prompt: do not pretend
    const std::string update = " (added in 1.4); update sa3 there or ";
    if (request.mode == Mode::Transform) return speaks + "no transform mode" + update + "choose another mode";
    if (!request.negativePrompt.empty()) return speaks + "no negative prompt" + update + "clear the negative prompt";
    if (!modelName.empty()) return speaks + "no model menu" + update + "set the model to the daemon's default";
  }
  // A 1.4 daemon ignores `loras` and would make the base model's audio: never send them there.
  if (minor >= 0 && minor < 5 && !request.loras.empty())
    return speaks + "no LoRA adapters (added in 1.5); update sa3 there or set the LoRA slots to none";
  // A 1.5 daemon ignores `exact_length` and would pad the take in silence: never send it there.
  if (minor >= 0 && minor < 6 && request.exactLength)
    return speaks + "no exact-length mode (added in 1.6); update sa3 there or turn exact length off";
  if (minor >= 0 && minor < 4) return {};
  if (!daemonModels_.empty()) {
    if (modelName.empty()) modelName = daemonModels_.front().name;  // every job names its model: the take records it
    const auto model = std::find_if(daemonModels_.begin(), daemonModels_.end(),
                                    [&](const ModelInfo& m) { return m.name == modelName; });
    if (model == daemonModels_.end()) {
      std::vector<std::string> served;
      for (const auto& m : daemonModels_) served.push_back(m.name);
      return "the daemon at " + endpoint_ + " does not serve model '" + modelName + "'; choose one of " +
             joined(served) + " in the model menu";
    }
    // exact_length is a steering option (protocol 1.6): the daemon answers invalid_request for a
    // model whose family lacks it, so say so before sending, as for a LoRA that does not fit.
    const auto& steering = model->steering;
    if (request.exactLength && std::find(steering.begin(), steering.end(), "exact_length") == steering.end())
      return "model '" + modelName + "' has no exact-length mode (" +
             (steering.empty() ? std::string("it takes no steering options")
                               : "its steering options are " + joined(steering)) +
             "); turn exact length off or choose another model";
  }
  if (request.loras.empty()) return {};
  if (daemonMaxLoras_ > 0 && static_cast<int>(request.loras.size()) > daemonMaxLoras_)
    return "the daemon at " + endpoint_ + " takes at most " + std::to_string(daemonMaxLoras_) + " LoRA adapter" +
           (daemonMaxLoras_ == 1 ? "" : "s") + " per job; set the other slots to none";
  std::vector<std::string> names;
  for (const auto& l : daemonLoras_) names.push_back(l.name);
  for (const auto& use : request.loras) {
    const auto found = std::find_if(daemonLoras_.begin(), daemonLoras_.end(),
                                    [&](const LoraInfo& l) { return lowerCase(l.name) == lowerCase(use.name); });
    if (found == daemonLoras_.end()) {
      const std::string has = names.empty() ? "its LoRA folder has none (start sa3 serve with --lora-dir DIR)"
                                            : "choose one of " + joined(names) + " in the LoRA slots";
      return "the daemon at " + endpoint_ + " has no LoRA '" + use.name + "'; " + has + ", or set that slot to none";
    }
    if (found->adapterType.empty())
      return "the daemon at " + endpoint_ + " cannot read LoRA '" + found->name + "' (" + found->file +
             "); replace the file there or set that slot to none";
    // modelName is "" only for a daemon that lists no models: it checks the fit itself.
    if (!modelName.empty() && std::find(found->fits.begin(), found->fits.end(), modelName) == found->fits.end())
      return "LoRA '" + found->name + "' does not fit model '" + modelName + "' (" +
             (found->fits.empty() ? std::string("it fits no model the daemon serves")
                                  : "it fits " + joined(found->fits)) +
             "); choose another adapter or model";
  }
  return {};
}

std::string Processor::statusText() const {
  std::lock_guard<std::mutex> lock(textMutex_);
  return statusText_;
}

void Processor::setStatus(Status status, const std::string& text) {
  {
    std::lock_guard<std::mutex> lock(textMutex_);
    statusText_ = text;
  }
  status_.store(static_cast<int>(status));
}

// ---- region ----------------------------------------------------------------------------------
ResolvedRegion Processor::resolveRegion() const noexcept {
  const HostSnapshot::Values host = host_->read();
  const double rate = sampleRate_.load() > 0 ? sampleRate_.load() : tb::kModelSampleRate;
  ResolvedRegion out;
  const double paramBpm = bpm_.load();
  out.bpm = tb::validBpm(host.bpm) ? host.bpm : (tb::validBpm(paramBpm) ? paramBpm : tb::kDefaultBpm);
  const tb::Meter hostMeter{host.numerator, host.denominator};
  out.meter = hostMeter.valid() ? hostMeter : (meter().valid() ? meter() : tb::Meter{});
  const bool hostLoop = host.looping && std::isfinite(host.loopStart) && std::isfinite(host.loopEnd) &&
                        host.loopEnd > host.loopStart && host.loopStart >= 0.0;
  out.fromHostLoop = hostLoop;
  if (mode() == Mode::Inpaint || mode() == Mode::Transform) {  // the selection itself
    if (hostLoop) {
      out.region = {tb::ppqToSamples(host.loopStart, out.bpm, rate), tb::ppqToSamples(host.loopEnd, out.bpm, rate)};
    } else {
      out.region = {tb::barStartSample(startBar_.load(), out.bpm, out.meter, rate),
                    tb::barStartSample(endBar_.load(), out.bpm, out.meter, rate)};
    }
    return out;
  }
  // Fill to bar length: N bars from a bar line (the loop start's nearest, or the set bar).
  const double startBar =
      hostLoop ? tb::nearestBarLine(host.loopStart, out.meter) : std::max(1.0, std::round(startBar_.load()));
  const double bars = bars_.load();
  out.region = {tb::barStartSample(startBar, out.bpm, out.meter, rate),
                tb::barStartSample(startBar + (std::isfinite(bars) ? bars : 0.0), out.bpm, out.meter, rate)};
  return out;
}

bool Processor::copyContext(int64_t start, int64_t end, std::vector<float>& left, std::vector<float>& right) const {
  std::lock_guard<std::mutex> lock(captureMutex_);
  if (!capture_ || start < 0 || end > capture_->capacity || end <= start) return false;
  left.resize(static_cast<size_t>(end - start));
  right.resize(static_cast<size_t>(end - start));
  for (int64_t t = start; t < end; ++t) {
    left[static_cast<size_t>(t - start)] = capture_->left[t].load(std::memory_order_relaxed);
    right[static_cast<size_t>(t - start)] = capture_->right[t].load(std::memory_order_relaxed);
  }
  return true;
}

// ---- worker ----------------------------------------------------------------------------------
namespace {
bool daemonRate(double rate) { return rate == 44100.0 || rate == 48000.0 || rate == 88200.0 || rate == 96000.0; }
}  // namespace

std::string Processor::buildJob(Job& job) const {
  const double rate = sampleRate_.load();
  if (rate <= 0.0) return "the plugin is not prepared yet; start playback once";
  if (!daemonRate(rate))
    return "host rate " + std::to_string(static_cast<int>(rate)) +
           " Hz is not one the daemon takes; set the project to 44.1, 48, 88.2 or 96 kHz";
  const ResolvedRegion resolved = resolveRegion();
  const tb::Region region = resolved.region;
  if (!region.valid()) return "the region is empty or reversed; set its end after its start";
  const int64_t maxSamples = tb::secondsToSamples(config_.maxCaptureSeconds, rate);
  if (region.end > maxSamples)
    return "the region ends after the " + std::to_string(static_cast<int>(config_.maxCaptureSeconds)) +
           " s the plugin captures; move it earlier";

  RenderRequest& req = job.request;
  req.mode = mode();
  req.prompt = prompt();
  req.negativePrompt = negativePrompt();
  req.model = model();  // "" : the daemon's default, named when the job is sent
  for (int slot = 0; slot < kLoraSlots; ++slot) {
    const std::string name = loraSlot(slot);
    const double strength = loraStrength(slot);
    if (name.empty()) continue;
    if (!validStrength(strength)) {
      char text[160];
      std::snprintf(text, sizeof text, "LoRA slot %d: strength %g is outside -%g to %g; set it in that range", slot + 1,
                    strength, kMaxLoraStrength, kMaxLoraStrength);
      return text;
    }
    if (strength == 0.0) continue;  // left out: it cannot clash
    for (int earlier = 0; earlier < slot; ++earlier)
      if (loraStrength(earlier) != 0.0 && lowerCase(loraSlot(earlier)) == lowerCase(name))
        return "LoRA '" + name + "' is in slots " + std::to_string(earlier + 1) + " and " + std::to_string(slot + 1) +
               "; an adapter applies once: set one of them to none";
  }
  req.loras = chosenLoras();  // the filled slots at strengths other than 0, in slot order
  req.exactLength = exactLength_.load();
  req.seed = static_cast<uint32_t>(seed_.load() & 0xffffffffu);
  req.steps = std::max(0, steps_.load());
  req.scaleLockDb = scaleLockDb_.load();
  if (req.scaleLockDb > kMaxScaleLockDb) {
    char text[112];
    std::snprintf(text, sizeof text, "scale lock %g dB is above the %g dB the daemon takes; lower it", req.scaleLockDb,
                  kMaxScaleLockDb);
    return text;
  }
  req.sampleRate = static_cast<int>(rate);
  req.bpm = resolved.bpm;
  req.meterNumerator = resolved.meter.numerator;
  req.meterDenominator = resolved.meter.denominator;
  const int64_t context = tb::secondsToSamples(config_.contextSeconds, rate);
  // Context windows start on a bar line, so the clip the daemon gets begins on a downbeat (the
  // model is told the song's tempo and puts beat 1 at the clip's first sample).
  const auto windowFrom = [&](int64_t sample) {
    return tb::barLineAtOrBefore(std::max<int64_t>(0, sample), resolved.bpm, resolved.meter, rate);
  };
  if (req.mode == Mode::Inpaint) {
    const int64_t windowStart = windowFrom(region.start - context);
    const int64_t windowEnd = std::min<int64_t>(maxSamples, region.end + context);
    if (!copyContext(windowStart, windowEnd, req.left, req.right)) return "no captured audio; play the region once";
    req.regionStart = region.start - windowStart;
    req.regionEnd = region.end - windowStart;
  } else if (req.mode == Mode::Continue) {
    const int64_t windowStart = windowFrom(region.start - context);
    // Nothing before the start (bar 1): continuing nothing is generating.
    if (region.start == 0 || !copyContext(windowStart, region.start, req.left, req.right)) req.mode = Mode::Generate;
    req.newSamples = region.length();
  } else if (req.mode == Mode::Transform) {
    req.initNoiseLevel = initNoiseLevel_.load();
    if (!(req.initNoiseLevel >= kMinInitNoiseLevel && req.initNoiseLevel <= 1.0)) {
      char text[112];
      std::snprintf(text, sizeof text, "init noise level %g is outside %g-1; set it in that range", req.initNoiseLevel,
                    kMinInitNoiseLevel);
      return text;
    }
    // The selection alone, no context: every sample of the reply is new and the take is all of it.
    if (!copyContext(region.start, region.end, req.left, req.right))
      return "no captured audio; play the selection once";
    // Told the tempo, the model puts a downbeat at the clip's first sample: true only when the
    // selection starts on a bar line, so elsewhere it is not told (it keeps a tempo the prompt names).
    if (windowFrom(region.start) != region.start) req.bpm = 0.0;
  } else {
    req.newSamples = region.length();
  }
  job.windowSamples = static_cast<int64_t>(req.left.size());

  Take& d = job.description;
  d.prompt = req.prompt;
  d.negativePrompt = req.negativePrompt;
  d.loras = req.loras;  // the result's `loras` overrides
  d.exactLength = req.exactLength;
  d.initNoiseLevel = req.mode == Mode::Transform ? req.initNoiseLevel : 0.0;
  d.seed = req.seed;
  d.steps = req.steps > 0 ? req.steps : modelDefaultSteps();  // the result's `steps` overrides
  d.scaleLockDb = req.scaleLockDb;
  d.mode = mode();
  d.bpm = resolved.bpm;
  d.meter = resolved.meter;
  d.sampleRate = rate;
  d.start = region.start;
  return {};
}

void Processor::finishJob(Job& job, DaemonEvent& result) {
  const Mode mode = job.request.mode;
  int64_t length = job.request.newSamples;
  if (mode == Mode::Inpaint) length = job.request.regionEnd - job.request.regionStart;
  if (mode == Mode::Transform) length = job.windowSamples;
  const auto total = static_cast<int64_t>(result.left.size());
  // Inpaint replies span the whole input clip; continue replies are the input then the new
  // audio; generate replies are the new audio; transform replies are the selection made again,
  // exactly its length. The take keeps the region only.
  int64_t offset = 0;
  if (mode == Mode::Inpaint) offset = job.request.regionStart;
  if (mode == Mode::Continue) offset = total - length;
  if (result.sampleRate != job.request.sampleRate || offset < 0 || offset + length > total ||
      (mode == Mode::Transform && total != length)) {
    setStatus(Status::Error, "the daemon's reply has " + std::to_string(total) + " samples at " +
                                 std::to_string(result.sampleRate) + " Hz, not the region asked for; render again");
    return;
  }
  auto take = std::make_shared<Take>(job.description);
  if (result.stepsUsed > 0) take->steps = result.stepsUsed;  // what reproduces it
  if (!result.model.empty()) take->model = result.model;     // the daemon says which model made it
  // The daemon says which adapters made it, named as its capabilities spell them (protocol 1.5).
  if (result.lorasSaid && result.usedLoras.size() <= static_cast<size_t>(kMaxLoras) &&
      std::all_of(result.usedLoras.begin(), result.usedLoras.end(),
                  [](const LoraUse& l) { return validStrength(l.strength); }))
    take->loras = result.usedLoras;
  take->left.assign(result.left.begin() + offset, result.left.begin() + offset + length);
  take->right.assign(result.right.begin() + offset, result.right.begin() + offset + length);
  const double rate = sampleRate_.load();
  if (rate > 0.0 && rate != take->sampleRate) *take = resampleTake(*take, rate);  // the host changed rate
  // Whatever the daemon sent (a pre-1.3 daemon has no ceiling), the host never gets more than
  // kTakeCeilingDb: the take is turned down as a whole, here on the worker thread.
  const float gain = limitTakePeak(*take);
  std::string turnedDown;
  if (gain < 1.0f) {
    char text[96];
    std::snprintf(text, sizeof text, " (turned down %.1f dB to the %g dBFS ceiling)", -20.0 * std::log10(gain),
                  kTakeCeilingDb);
    turnedDown = text;
  }
  {
    std::lock_guard<std::mutex> lock(takesMutex_);
    take->id = nextTakeId_++;
    takes_.push_back(take);
    activeIndex_ = static_cast<int>(takes_.size()) - 1;
    active_.store(take.get());
  }
  rendersCompleted_.fetch_add(1);
  progress_.store(1.0f);
  setStatus(Status::Idle, "take " + std::to_string(take->id) + " ready" + turnedDown);
}

void Processor::workerLoop() {
  std::string endpoint = this->endpoint();
  uint64_t seenEndpoint = endpointSerial_.load();
  auto client = std::make_unique<DaemonClient>(endpoint);
  const auto heartbeat = std::chrono::milliseconds(config_.heartbeatMs);
  const auto offlineAfter = std::chrono::milliseconds(config_.offlineAfterMs);
  const auto requestTimeout = std::chrono::milliseconds(config_.requestTimeoutMs);
  auto lastHeard = Clock::now() - offlineAfter;  // offline until the daemon answers
  auto lastSent = Clock::time_point{};
  auto lastReconnect = Clock::now();
  bool online = false;
  uint64_t seenRender = renderSerial_.load(), seenCancel = cancelSerial_.load();
  std::unique_ptr<Job> job;
  std::string daemonId;          // the instance that sent the last message (protocol 1.3; "" before)
  std::vector<int64_t> orphans;  // request_ids of replaced renders the daemon has not acknowledged
  const auto waitingText = [&](const std::string& tail) {
    // An endpoint ZeroMQ refuses is the user's to fix: say so instead of waiting forever.
    return client->problem().empty() ? "offline: waiting for the daemon at " + endpoint + tail : client->problem();
  };
  setStatus(Status::Offline, waitingText(" (start `sa3 serve`)"));
  client->sendHello();

  // Sends the job (again); false, with the job dropped and a status line, when the daemon there
  // cannot run it as asked (a model it does not serve, a 1.4, 1.5 or 1.6 feature on an older daemon).
  // A job with LoRA adapters or exact length waits (false, kept) for the daemon's capabilities: a
  // daemon before 1.5 would ignore the adapters, one before 1.6 exact length, so they go only to one
  // known to speak the version that has them.
  auto submit = [&]() -> bool {
    const bool needsVersion = !job->request.loras.empty() || job->request.exactLength;
    if (needsVersion && !daemonKnown()) {
      job->submitted = false;
      client->sendHello();  // asked again with every heartbeat until it answers (below)
      setStatus(Status::Rendering, job->request.loras.empty()
                                       ? "waiting for the daemon's capabilities before asking for exact length"
                                       : "waiting for the daemon's capabilities before sending the LoRA adapters");
      return false;
    }
    std::string model;
    const std::string problem = checkAgainstDaemon(job->request, model);
    if (!problem.empty()) {
      setStatus(Status::Error, problem);
      job.reset();
      return false;
    }
    job->request.model = model;
    job->description.model = model;
    job->requestId = client->submit(job->request);
    job->submitted = true;
    job->jobId.clear();
    job->daemonId = daemonId;  // until `queued` says which instance took it
    job->lastHeard = Clock::now();
    progress_.store(0.0f);
    setStatus(Status::Rendering, std::string("rendering (") + modeName(job->request.mode) + ")");
    return true;
  };

  while (!quit_.load()) {
    if (endpointSerial_.load() != seenEndpoint) {  // a new daemon address: start over there
      seenEndpoint = endpointSerial_.load();
      endpoint = this->endpoint();
      client = std::make_unique<DaemonClient>(endpoint);
      forgetDaemon();  // another daemon may serve other models, or speak an older protocol
      client->sendHello();
      if (job) {
        job->submitted = false;
        job->jobId.clear();
        job->daemonId.clear();
      }
      daemonId.clear();
      online = false;
      lastHeard = Clock::now() - offlineAfter;
      lastReconnect = Clock::now();
      setStatus(Status::Offline, waitingText(""));
    }
    const auto now = Clock::now();
    const uint64_t render = renderSerial_.load();
    if (render != seenRender) {
      seenRender = render;
      if (job && !job->jobId.empty()) client->cancel(job->jobId);
      if (job && job->submitted && job->jobId.empty()) orphans.push_back(job->requestId);  // cancel once queued
      job = std::make_unique<Job>();
      const std::string problem = buildJob(*job);
      if (!problem.empty()) {
        job.reset();
        setStatus(online ? Status::Error : Status::Offline, problem);
      } else if (online) {
        submit();
      } else {
        setStatus(Status::Offline, client->problem().empty()
                                       ? "offline: the render starts when the daemon at " + endpoint + " answers"
                                       : client->problem());
      }
    }
    const uint64_t cancel = cancelSerial_.load();
    if (cancel != seenCancel) {
      seenCancel = cancel;
      if (job && !job->jobId.empty()) client->cancel(job->jobId);
      if (job && job->submitted && job->jobId.empty()) orphans.push_back(job->requestId);
      if (job) setStatus(online ? Status::Idle : Status::Offline, "render cancelled");
      job.reset();
    }
    if (now - lastSent >= heartbeat && now - lastHeard >= heartbeat) {
      client->sendHeartbeat();
      if (job && !job->submitted && online) client->sendHello();  // a job waits for the capabilities
      lastSent = now;
    }

    DaemonEvent event;
    if (client->receive(20, event)) {
      lastHeard = Clock::now();
      if (event.kind == DaemonEvent::Kind::Capabilities) takeCapabilities(event);
      // Another instance at the endpoint (protocol 1.3's daemon_id) may serve other models: forget
      // what the last one said until its own capabilities reply (asked for below) arrives.
      const bool newInstance = !event.daemonId.empty() && !daemonId.empty() && event.daemonId != daemonId;
      if (newInstance && event.kind != DaemonEvent::Kind::Capabilities) forgetDaemon();
      if (!event.daemonId.empty()) daemonId = event.daemonId;
      // Protocol 1.3: every header names the daemon instance. Another instance than the one the
      // job went to answering (a heartbeat, a capabilities, anything) means the daemon was
      // restarted, perhaps too quickly for the plugin to see it offline, and the job is gone. The
      // one exception is the job's own `queued`: a request sent just after a restart, before the
      // plugin heard from the new instance, is accepted by it.
      const bool acceptsJob = job && event.kind == DaemonEvent::Kind::Queued && event.requestId == job->requestId;
      bool restarted = false;
      if (job && job->submitted && !job->daemonId.empty() && !event.daemonId.empty() &&
          event.daemonId != job->daemonId && !acceptsJob) {
        restarted = true;
        if (!job->resubmitted) {
          job->resubmitted = true;
          if (submit()) setStatus(Status::Rendering, "the daemon restarted and lost the render; rendering again");
        } else {
          setStatus(Status::Error, "the daemon restarted again and lost the render a second time; render again");
          job.reset();
        }
      }
      if ((!online || restarted || newInstance) && event.kind != DaemonEvent::Kind::Capabilities) {
        // Ask again what the daemon serves: the hello sent while it was away was dropped (the
        // socket queues nothing for a missing peer), and a restarted daemon may serve other models.
        client->sendHello();
      }
      if (!online) {
        online = true;
        if (restarted) {
          // handled above: resubmitted, or failed with its message
        } else if (job && job->submitted && !job->jobId.empty()) {
          // The same daemon still has the job; a restarted one answers unknown_job (resubmit).
          job->requestId = client->fetch(job->jobId);
          job->lastHeard = Clock::now();
          setStatus(Status::Rendering, "reconnected; recovering the render");
        } else if (job) {
          submit();
        } else {
          setStatus(Status::Idle, "online");
        }
      } else if (event.kind == DaemonEvent::Kind::Capabilities && job && !job->submitted) {
        submit();  // a job that waited for them (LoRA adapters, exact length)
      }
      const bool ours = job && ((!job->jobId.empty() && event.jobId == job->jobId) ||
                                (event.requestId >= 0 && event.requestId == job->requestId));
      if (ours) {
        job->lastHeard = lastHeard;
        switch (event.kind) {
          case DaemonEvent::Kind::Queued:
            job->jobId = event.jobId;
            job->daemonId = event.daemonId;
            if (status() != Status::Rendering) setStatus(Status::Rendering, "rendering");
            break;
          case DaemonEvent::Kind::Progress:
            if (event.total > 0) progress_.store(static_cast<float>(event.step) / static_cast<float>(event.total));
            break;
          case DaemonEvent::Kind::Result:
            finishJob(*job, event);
            job.reset();
            break;
          case DaemonEvent::Kind::Cancelled:
            setStatus(Status::Idle, "render cancelled by the daemon");
            job.reset();
            break;
          case DaemonEvent::Kind::Error:
            if (event.code == "unknown_job" && !job->resubmitted) {
              job->resubmitted = true;  // the daemon restarted and lost it: send it again once
              submit();
            } else {
              setStatus(Status::Error, "daemon: " + event.message);
              // A model it no longer serves (restarted with others): ask again, so the menu shows what it has.
              if (event.code == "bad_field") client->sendHello();
              job.reset();
            }
            break;
          default:
            break;
        }
      } else if (event.kind == DaemonEvent::Kind::Queued && !event.jobId.empty() &&
                 std::find(orphans.begin(), orphans.end(), event.requestId) != orphans.end()) {
        // A render replaced before the daemon acknowledged it: stop it now that it has an id.
        client->cancel(event.jobId);
        orphans.erase(std::find(orphans.begin(), orphans.end(), event.requestId));
      } else if (event.kind == DaemonEvent::Kind::Shutdown) {
        lastHeard = Clock::now() - offlineAfter;  // go offline now rather than after a timeout
      }
    }

    const auto after = Clock::now();
    if (online && after - lastHeard > offlineAfter) {
      online = false;
      setStatus(Status::Offline, "offline: lost the daemon at " + endpoint + "; reconnecting");
    }
    if (!online && after - lastReconnect > offlineAfter) {
      client->reconnect();  // a fresh socket drops whatever was queued for the dead peer
      client->sendHello();
      lastReconnect = after;
    }
    if (online && job && job->submitted && after - job->lastHeard > requestTimeout) {
      setStatus(Status::Error, "the render timed out with no progress; render again");
      if (!job->jobId.empty()) client->cancel(job->jobId);
      job.reset();
    }
  }
}

// ---- takes -----------------------------------------------------------------------------------
size_t Processor::numTakes() const {
  std::lock_guard<std::mutex> lock(takesMutex_);
  return takes_.size();
}

TakeInfo Processor::takeInfo(size_t index) const {
  std::lock_guard<std::mutex> lock(takesMutex_);
  const Take& t = *takes_.at(index);
  TakeInfo info;
  info.id = t.id;
  info.prompt = t.prompt;
  info.seed = t.seed;
  info.steps = t.steps;
  info.scaleLockDb = t.scaleLockDb;
  info.mode = t.mode;
  info.model = t.model;
  info.negativePrompt = t.negativePrompt;
  info.initNoiseLevel = t.initNoiseLevel;
  info.loras = t.loras;
  info.exactLength = t.exactLength;
  info.sampleRate = t.sampleRate;
  info.start = t.start;
  info.length = t.length();
  info.bpm = t.bpm;
  info.meter = t.meter;
  return info;
}

std::vector<float> Processor::takeAudio(size_t index, int channel) const {
  std::lock_guard<std::mutex> lock(takesMutex_);
  const Take& t = *takes_.at(index);
  return channel == 0 ? t.left : t.right;
}

void Processor::selectTake(int index) {
  std::lock_guard<std::mutex> lock(takesMutex_);
  if (index >= static_cast<int>(takes_.size())) index = -1;
  activeIndex_ = index < 0 ? -1 : index;
  active_.store(activeIndex_ >= 0 ? takes_[static_cast<size_t>(activeIndex_)].get() : nullptr);
}

int Processor::activeTake() const {
  std::lock_guard<std::mutex> lock(takesMutex_);
  return activeIndex_;
}

void Processor::deleteTake(size_t index) {
  std::shared_ptr<const Take> removed;
  {
    std::lock_guard<std::mutex> lock(takesMutex_);
    if (index >= takes_.size()) return;
    removed = takes_[index];
    takes_.erase(takes_.begin() + static_cast<std::ptrdiff_t>(index));
    if (activeIndex_ == static_cast<int>(index))
      activeIndex_ = -1;
    else if (activeIndex_ > static_cast<int>(index))
      --activeIndex_;
    active_.store(activeIndex_ >= 0 ? takes_[static_cast<size_t>(activeIndex_)].get() : nullptr);
  }
  waitForAudioThreadToLeaveBlock();  // then `removed` may be freed
}

}  // namespace sa3
