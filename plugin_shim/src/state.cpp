// Processor state as a versioned little-endian binary blob:
//   "SA3S" u32 version | settings | prompt | next take id | active index | takes (with audio)
// Readers refuse unknown versions and any blob that is short, long or out of range.
// Version 2 adds the scale lock (f64 dB, -1 = the model's setting) after `steps`, in the
// settings and in each take. Version 3 (protocol 1.4) allows mode 3 (transform) and adds
//   settings, after the endpoint: negative prompt | model ("" = the daemon's default) | f64 init noise level
//   each take, after its start:   model ("" = not named) | negative prompt | f64 init noise level (0: not a transform)
// Version 4 (protocol 1.5) adds LoRA adapters, each list a u32 count then (name, f64 strength) pairs:
//   settings, after the init noise level: the slots (kLoraSlots; name "" = none)
//   each take, after its init noise level: the adapters that made it, in order (at most kMaxLoras)
// Strengths are within -kMaxLoraStrength..kMaxLoraStrength.
// Version 5 (protocol 1.6) adds exact length, a u8 that is 0 (padded as released) or 1 (exact):
//   settings, after the LoRA slots: exact length for the next renders
//   each take, after its adapters:  whether it was made at exact length
// Older blobs still load: the scale lock as the model's setting, no negative prompt, the
// daemon's default model, the default init noise level, empty LoRA slots at strength 1, exact
// length off, and takes made without adapters and with the released headroom.
#include <cmath>
#include <cstring>
#include <limits>

#include "sa3/processor.h"

namespace sa3 {

namespace {

constexpr char kMagic[4] = {'S', 'A', '3', 'S'};
constexpr uint32_t kStateVersion = 5;
constexpr uint32_t kOldestStateVersion = 1;

class Writer {
 public:
  template <typename T>
  void put(T value) {
    static_assert(std::is_trivially_copyable<T>::value, "plain values only");
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void putString(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void putFloats(const std::vector<float>& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size() * sizeof(float));
  }
  void putLoras(const std::vector<LoraUse>& loras) {
    put<uint32_t>(static_cast<uint32_t>(loras.size()));
    for (const auto& lora : loras) {
      putString(lora.name);
      put<double>(lora.strength);
    }
  }
  std::vector<uint8_t> bytes;
};

class Reader {
 public:
  Reader(const void* data, size_t size) : p_(static_cast<const uint8_t*>(data)), left_(size) {}
  template <typename T>
  bool get(T& value) {
    if (left_ < sizeof(T)) return false;
    std::memcpy(&value, p_, sizeof(T));
    p_ += sizeof(T);
    left_ -= sizeof(T);
    return true;
  }
  bool getString(std::string& s) {
    uint64_t n = 0;
    if (!get(n) || n > left_) return false;
    s.assign(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    left_ -= static_cast<size_t>(n);
    return true;
  }
  bool getFloats(std::vector<float>& v, uint64_t count) {
    if (count > left_ / sizeof(float)) return false;
    v.resize(static_cast<size_t>(count));
    std::memcpy(v.data(), p_, count * sizeof(float));
    p_ += count * sizeof(float);
    left_ -= static_cast<size_t>(count * sizeof(float));
    return true;
  }
  /// At most `most` (name, strength) pairs with strengths in range; names may be "" only where
  /// `allowEmpty` (an empty slot).
  bool getLoras(std::vector<LoraUse>& loras, uint32_t most, bool allowEmpty) {
    uint32_t count = 0;
    if (!get(count) || count > most) return false;
    loras.resize(count);
    for (auto& lora : loras)
      if (!getString(lora.name) || (!allowEmpty && lora.name.empty()) || !get(lora.strength) ||
          !(std::isfinite(lora.strength) && std::fabs(lora.strength) <= kMaxLoraStrength))
        return false;
    return true;
  }
  /// A u8 flag: 0 or 1, anything else is not a state.
  bool getFlag(bool& flag) {
    uint8_t byte = 0;
    if (!get(byte) || byte > 1) return false;
    flag = byte == 1;
    return true;
  }
  bool done() const { return left_ == 0; }

 private:
  const uint8_t* p_;
  size_t left_;
};

}  // namespace

std::vector<uint8_t> Processor::getStateInformation() const {
  Writer w;
  w.bytes.insert(w.bytes.end(), kMagic, kMagic + 4);
  w.put<uint32_t>(kStateVersion);
  w.put<int32_t>(mode_.load());
  w.put<double>(bpm_.load());
  w.put<int32_t>(meterNumerator_.load());
  w.put<int32_t>(meterDenominator_.load());
  w.put<double>(startBar_.load());
  w.put<double>(endBar_.load());
  w.put<double>(bars_.load());
  w.put<uint64_t>(seed_.load());
  w.put<int32_t>(steps_.load());
  w.put<double>(scaleLockDb_.load());
  w.putString(prompt());
  w.putString(endpoint());
  w.putString(negativePrompt());
  w.putString(model());
  w.put<double>(initNoiseLevel_.load());
  std::vector<LoraUse> slots(kLoraSlots);
  for (int slot = 0; slot < kLoraSlots; ++slot) slots[slot] = {loraSlot(slot), loraStrength(slot)};
  w.putLoras(slots);
  w.put<uint8_t>(exactLength_.load() ? 1 : 0);
  std::lock_guard<std::mutex> lock(takesMutex_);
  w.put<uint64_t>(nextTakeId_);
  w.put<int32_t>(activeIndex_);
  w.put<uint64_t>(takes_.size());
  for (const auto& t : takes_) {
    w.put<uint64_t>(t->id);
    w.putString(t->prompt);
    w.put<uint64_t>(t->seed);
    w.put<int32_t>(t->steps);
    w.put<double>(t->scaleLockDb);
    w.put<int32_t>(static_cast<int32_t>(t->mode));
    w.put<double>(t->bpm);
    w.put<int32_t>(t->meter.numerator);
    w.put<int32_t>(t->meter.denominator);
    w.put<double>(t->sampleRate);
    w.put<int64_t>(t->start);
    w.putString(t->model);
    w.putString(t->negativePrompt);
    w.put<double>(t->initNoiseLevel);
    w.putLoras(t->loras);
    w.put<uint8_t>(t->exactLength ? 1 : 0);
    w.put<uint64_t>(t->left.size());
    w.putFloats(t->left);
    w.putFloats(t->right);
  }
  return std::move(w.bytes);
}

bool Processor::setStateInformation(const void* data, size_t size) {
  if (data == nullptr || size < 8 || std::memcmp(data, kMagic, 4) != 0) return false;
  Reader r(static_cast<const uint8_t*>(data) + 4, size - 4);
  uint32_t version = 0;
  if (!r.get(version) || version < kOldestStateVersion || version > kStateVersion) return false;
  // A field a version lacks reads as its default; a present one must be readable.
  const auto getScaleLock = [&](double& db) { return version < 2 || (r.get(db) && (db >= 0.0 || db == -1.0)); };
  const auto getText = [&](std::string& s) { return version < 3 || r.getString(s); };
  // 0 stands for "not a transform" in a take only (allowZero); the settings hold a usable level
  const auto getNoiseLevel = [&](double& level, bool allowZero) {
    return version < 3 || (r.get(level) && ((level > 0.0 && level <= 1.0) || (allowZero && level == 0.0)));
  };
  // LoRA slots (empty ones included) in the settings, the adapters that made a take in each take
  const auto getSlots = [&](std::vector<LoraUse>& slots) { return version < 4 || r.getLoras(slots, kLoraSlots, true); };
  const auto getTakeLoras = [&](std::vector<LoraUse>& loras) {
    return version < 4 || r.getLoras(loras, kMaxLoras, false);
  };
  // exact length (off before version 5): for the next renders in the settings, as made in each take
  const auto getExactLength = [&](bool& exact) { return version < 5 || r.getFlag(exact); };
  const int32_t lastMode = version < 3 ? 2 : 3;  // transform arrived with version 3
  int32_t mode = 0, numerator = 0, denominator = 0, steps = 0, active = -1;
  double bpm = 0, startBar = 0, endBar = 0, bars = 0, scaleLockDb = -1.0, initNoiseLevel = kDefaultInitNoiseLevel;
  uint64_t seed = 0, nextId = 0, count = 0;
  std::string prompt, endpoint, negativePrompt, model;
  std::vector<LoraUse> slots;
  bool exactLength = false;
  if (!r.get(mode) || !r.get(bpm) || !r.get(numerator) || !r.get(denominator) || !r.get(startBar) || !r.get(endBar) ||
      !r.get(bars) || !r.get(seed) || !r.get(steps) || !getScaleLock(scaleLockDb) || !r.getString(prompt) ||
      !r.getString(endpoint) || !getText(negativePrompt) || !getText(model) || !getNoiseLevel(initNoiseLevel, false) ||
      !getSlots(slots) || !getExactLength(exactLength) || !r.get(nextId) || !r.get(active) || !r.get(count))
    return false;
  if (mode < 0 || mode > lastMode || count > (1u << 20)) return false;
  std::vector<std::shared_ptr<const Take>> takes;
  const double rate = sampleRate_.load();
  for (uint64_t i = 0; i < count; ++i) {
    Take t;
    int32_t takeMode = 0;
    uint64_t length = 0;
    if (!r.get(t.id) || !r.getString(t.prompt) || !r.get(t.seed) || !r.get(t.steps) || !getScaleLock(t.scaleLockDb) ||
        !r.get(takeMode) || !r.get(t.bpm) || !r.get(t.meter.numerator) || !r.get(t.meter.denominator) ||
        !r.get(t.sampleRate) || !r.get(t.start) || !getText(t.model) || !getText(t.negativePrompt) ||
        !getNoiseLevel(t.initNoiseLevel, true) || !getTakeLoras(t.loras) || !getExactLength(t.exactLength) ||
        !r.get(length) || !r.getFloats(t.left, length) || !r.getFloats(t.right, length))
      return false;
    if (takeMode < 0 || takeMode > lastMode || !(t.sampleRate > 0.0) || t.start < 0) return false;
    t.mode = static_cast<Mode>(takeMode);
    // A project reopened at another rate plays its takes resampled to the host rate.
    takes.push_back(
        std::make_shared<const Take>(rate > 0.0 && rate != t.sampleRate ? resampleTake(t, rate) : std::move(t)));
  }
  if (!r.done() || active < -1 || active >= static_cast<int32_t>(takes.size())) return false;

  mode_.store(mode);
  bpm_.store(bpm);
  setMeter(numerator, denominator);
  setRegionBars(startBar, endBar);
  bars_.store(bars);
  seed_.store(seed);
  steps_.store(steps);
  scaleLockDb_.store(scaleLockDb);
  initNoiseLevel_.store(initNoiseLevel);
  exactLength_.store(exactLength);  // off in a state before version 5
  setPrompt(prompt);
  setNegativePrompt(negativePrompt);
  setModel(model);
  slots.resize(kLoraSlots, {"", kDefaultLoraStrength});  // a state before version 4: no adapters
  for (int slot = 0; slot < kLoraSlots; ++slot) {
    setLoraSlot(slot, slots[slot].name);
    setLoraStrength(slot, slots[slot].strength);
  }
  if (!endpoint.empty()) setEndpoint(endpoint);
  std::vector<std::shared_ptr<const Take>> old;
  {
    std::lock_guard<std::mutex> lock(takesMutex_);
    old.swap(takes_);
    takes_ = std::move(takes);
    activeIndex_ = active;
    nextTakeId_ = nextId;
    active_.store(active >= 0 ? takes_[static_cast<size_t>(active)].get() : nullptr);
  }
  waitForAudioThreadToLeaveBlock();  // then the old takes may be freed
  return true;
}

}  // namespace sa3
