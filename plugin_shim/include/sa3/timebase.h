// sa3 plugin time math: host samples <-> seconds <-> bars/beats <-> model samples <-> latent frames.
//
// Mirrors sa3core/timebase.py; every conversion the shim makes lives here and nowhere else.
//  - The model runs at 44,100 Hz, stereo; one latent frame covers 4,096 model samples and
//    frames = ceil(samples / 4096).
//  - bpm counts quarter notes per minute whatever the meter (the DAW convention), so a 6/8
//    bar lasts 3 quarter notes and a 7/8 bar 3.5; ppq positions count quarter notes from
//    the song start, as JUCE's PositionInfo does.
//  - Bar numbers are 1-based as a DAW shows them: bar 5 starts 4 bars after the song start.
//  - Tempo and meter are taken as constant from the song start (hosts with tempo maps give
//    the current tempo only; regions then follow the current tempo).
// All functions are pure, noexcept and allocation free unless stated, so the audio thread
// may call them.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace sa3::timebase {

constexpr int kModelSampleRate = 44100;
constexpr int kModelChannels = 2;
constexpr int64_t kSamplesPerFrame = 4096;  // the autoencoder's total downsampling
constexpr double kMaxSeconds = 380.0;       // 6 min 20 s, as the paper
constexpr double kMinBpm = 20.0, kMaxBpm = 999.0;
constexpr double kDefaultBpm = 120.0;

/// A time signature such as 4/4, 3/4, 6/8 or 7/8.
struct Meter {
  int numerator = 4;
  int denominator = 4;

  bool valid() const noexcept {
    return numerator >= 1 && numerator <= 64 &&
           (denominator == 1 || denominator == 2 || denominator == 4 || denominator == 8 || denominator == 16 ||
            denominator == 32);
  }
  /// Quarter notes in one bar: 4/4 -> 4, 3/4 -> 3, 6/8 -> 3, 7/8 -> 3.5.
  double quartersPerBar() const noexcept { return numerator * 4.0 / denominator; }
};

inline bool validBpm(double bpm) noexcept { return std::isfinite(bpm) && bpm >= kMinBpm && bpm <= kMaxBpm; }

/// Nearest whole sample count for `seconds` at `sampleRate`. Ties go to the even sample, as
/// Python's round() in sa3core.timebase does, so both sides agree to the sample.
inline int64_t secondsToSamples(double seconds, double sampleRate) noexcept {
  return static_cast<int64_t>(std::nearbyint(seconds * sampleRate));
}

inline double samplesToSeconds(int64_t samples, double sampleRate) noexcept {
  return static_cast<double>(samples) / sampleRate;
}

/// Latent frames that cover `modelSamples` samples at 44.1 kHz: ceil(samples / 4096).
inline int64_t samplesToFrames(int64_t modelSamples) noexcept {
  return modelSamples <= 0 ? 0 : (modelSamples + kSamplesPerFrame - 1) / kSamplesPerFrame;
}

/// A host-rate sample count expressed at the model rate (nearest sample).
inline int64_t hostToModelSamples(int64_t hostSamples, double hostSampleRate) noexcept {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(hostSamples) * kModelSampleRate / hostSampleRate));
}

/// Seconds of one bar at `bpm` (quarter notes per minute) in `meter`.
inline double barSeconds(double bpm, Meter meter) noexcept { return 60.0 / bpm * meter.quartersPerBar(); }

/// Quarter-note position (JUCE's ppqPosition) to seconds at a steady tempo.
inline double ppqToSeconds(double ppq, double bpm) noexcept { return ppq * 60.0 / bpm; }

/// Quarter-note position to the nearest host sample at a steady tempo.
inline int64_t ppqToSamples(double ppq, double bpm, double sampleRate) noexcept {
  return secondsToSamples(ppqToSeconds(ppq, bpm), sampleRate);
}

/// Host sample position to quarter notes at a steady tempo.
inline double samplesToPpq(int64_t samples, double bpm, double sampleRate) noexcept {
  return samplesToSeconds(samples, sampleRate) * bpm / 60.0;
}

/// 1-based bar number (may be fractional: 2.5 is half way through bar 2) to quarter notes.
inline double barToPpq(double bar, Meter meter) noexcept { return (bar - 1.0) * meter.quartersPerBar(); }

/// Exact sample count of `bars` bars: 4 bars of 4/4 at 120 bpm is 352,800 at 44.1 kHz.
inline int64_t barsToSamples(double bars, double bpm, Meter meter, double sampleRate) noexcept {
  return secondsToSamples(bars * barSeconds(bpm, meter), sampleRate);
}

/// Host sample at which 1-based bar `bar` starts.
inline int64_t barStartSample(double bar, double bpm, Meter meter, double sampleRate) noexcept {
  return ppqToSamples(barToPpq(bar, meter), bpm, sampleRate);
}

/// Host sample of the last bar line at or before `sample` (bar 1 starts at sample 0).
inline int64_t barLineAtOrBefore(int64_t sample, double bpm, Meter meter, double sampleRate) noexcept {
  double bar = std::floor(samplesToPpq(sample, bpm, sampleRate) / meter.quartersPerBar()) + 1.0;
  if (bar < 1.0) bar = 1.0;
  // Bar lines are rounded to whole samples, so the estimate can be a bar late or (at a bar line
  // rounded down, whose ppq reads a hair under the bar) a bar early: step to the right one.
  while (bar > 1.0 && barStartSample(bar, bpm, meter, sampleRate) > sample) bar -= 1.0;
  while (barStartSample(bar + 1.0, bpm, meter, sampleRate) <= sample) bar += 1.0;
  const int64_t line = barStartSample(bar, bpm, meter, sampleRate);
  return line > sample ? 0 : line;
}

/// The 1-based bar whose start is nearest to quarter-note position `ppq` (never before bar 1).
inline double nearestBarLine(double ppq, Meter meter) noexcept {
  const double bar = std::round(ppq / meter.quartersPerBar()) + 1.0;
  return bar < 1.0 ? 1.0 : bar;
}

/// A span of the host timeline in host samples: [start, end).
struct Region {
  int64_t start = 0;
  int64_t end = 0;
  int64_t length() const noexcept { return end - start; }
  bool valid() const noexcept { return start >= 0 && end > start; }
};

/// Inpaint mask over the latent frames of a window of `windowModelSamples` model samples in
/// which [regionStart, regionEnd) (model samples from the window start) is regenerated.
/// One entry per frame (ceil(window / 4096)); 1 = keep (given), 0 = regenerate, as in
/// docs/architecture.md: a frame is regenerated when any of its samples lies in the region.
/// Allocates: call it off the audio thread.
inline std::vector<uint8_t> inpaintFrameMask(int64_t windowModelSamples, int64_t regionStart, int64_t regionEnd) {
  const int64_t frames = samplesToFrames(windowModelSamples);
  std::vector<uint8_t> mask(static_cast<size_t>(frames), 1);
  if (regionEnd <= regionStart) return mask;
  const int64_t first = regionStart < 0 ? 0 : regionStart / kSamplesPerFrame;
  const int64_t last = (regionEnd - 1) / kSamplesPerFrame;  // frame holding the last sample
  for (int64_t f = first; f <= last && f < frames; ++f) mask[static_cast<size_t>(f)] = 0;
  return mask;
}

}  // namespace sa3::timebase
