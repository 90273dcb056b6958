// A take: one result from the daemon, kept non-destructively with everything that made it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sa3/timebase.h"

namespace sa3 {

/// What the daemon is asked to do with the region.
enum class Mode : int {
  Generate = 0,   // new audio for N bars, no context
  Inpaint = 1,    // regenerate the region, the captured audio around it is context
  Continue = 2,   // N bars that follow the captured audio before the region start
  Transform = 3,  // the region made again after the prompt, from its own audio (protocol 1.4)
};

/// Transform's init noise level (protocol 1.4, 0 < level <= 1): how much noise is mixed into the
/// selection's latents before sampling (near 0 keeps the input, 1 keeps only its length). The
/// plugin's control runs from kMinInitNoiseLevel to 1.
constexpr double kDefaultInitNoiseLevel = 0.9;
constexpr double kMinInitNoiseLevel = 0.01;

/// One LoRA adapter of a job or take (protocol 1.5): its name in the daemon's LoRA folder and the
/// strength it applies at (-2 to 2; 1 = as trained). Adapters apply in list order.
struct LoraUse {
  std::string name;
  double strength = 1.0;
  bool operator==(const LoraUse& other) const { return name == other.name && strength == other.strength; }
};

/// One rendered result. Immutable once published to the audio thread.
struct Take {
  uint64_t id = 0;  // unique within a plugin instance's state
  std::string prompt;
  uint64_t seed = 0;
  int steps = 0;              // the sampler steps it ran (0: the model's default, number not known)
  double scaleLockDb = -1.0;  // as asked of the daemon; < 0: the model's setting
  Mode mode = Mode::Inpaint;
  std::string model;            // the daemon model that made it ("" : a daemon before 1.4, which names none)
  std::string negativePrompt;   // "" : none
  double initNoiseLevel = 0.0;  // transform takes: the level asked for; 0 for the other modes
  std::vector<LoraUse> loras;   // the adapters that made it, in order, as the result says (none: the base model)
  bool exactLength = false;     // made at exactly its length, without the released models' 6 s headroom (1.6)
  double bpm = timebase::kDefaultBpm;
  timebase::Meter meter;
  double sampleRate = timebase::kModelSampleRate;  // rate of `left`/`right` and of `start`
  int64_t start = 0;                               // host timeline sample where it begins
  std::vector<float> left, right;                  // the region's new audio, equal lengths

  int64_t length() const noexcept { return static_cast<int64_t>(left.size()); }
  timebase::Region region() const noexcept { return {start, start + length()}; }
};

/// The level ceiling of every take the plugin plays: sample peak at most -1 dBFS, the ceiling
/// the daemon keeps (as true peak) from protocol 1.3 on. Takes from older daemons, or made
/// louder by anything on the way, are turned down as a whole to meet it.
constexpr double kTakeCeilingDb = -1.0;

/// Scales the whole take (both channels by one gain) so that its sample peak is at most
/// `ceilingDb` dBFS; a take already under it is left bit for bit. Returns the gain applied
/// (1 when none). Allocation free, but loops over the take: worker or message thread only.
float limitTakePeak(Take& take, double ceilingDb = kTakeCeilingDb) noexcept;

/// A take resampled to another host rate (linear interpolation, done off the audio thread
/// when a project reopens at a rate other than the one the take was rendered at, or a reply
/// lands after the host changed rate), then held under kTakeCeilingDb.
Take resampleTake(const Take& take, double newSampleRate);

}  // namespace sa3
