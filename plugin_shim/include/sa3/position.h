// The host's transport position, shaped like JUCE's AudioPlayHead::PositionInfo.
// Every field is optional because hosts differ in what they report (pedalboard, for one,
// gives no transport at all); the processor falls back field by field.
#pragma once

#include <cstdint>
#include <optional>

namespace sa3 {

struct PositionInfo {
  std::optional<double> bpm;              // quarter notes per minute
  std::optional<int> timeSigNumerator;    // e.g. 6 in 6/8
  std::optional<int> timeSigDenominator;  // e.g. 8 in 6/8
  std::optional<double> ppqPosition;      // quarter notes from the song start
  std::optional<double> ppqPositionOfLastBarStart;
  std::optional<int64_t> timeInSamples;  // host samples from the song start
  std::optional<bool> isPlaying;
  std::optional<bool> isLooping;
  std::optional<double> loopStartPpq;  // cycle range in quarter notes
  std::optional<double> loopEndPpq;
};

}  // namespace sa3
