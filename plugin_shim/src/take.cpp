#include "sa3/take.h"

#include <algorithm>
#include <cmath>

namespace sa3 {

Take resampleTake(const Take& take, double newSampleRate) {
  Take out = take;
  out.left.clear();
  out.right.clear();
  out.sampleRate = newSampleRate;
  const double ratio = take.sampleRate / newSampleRate;  // source samples per output sample
  out.start = static_cast<int64_t>(std::llround(static_cast<double>(take.start) / ratio));
  const int64_t length = static_cast<int64_t>(std::llround(static_cast<double>(take.length()) / ratio));
  out.left.resize(static_cast<size_t>(length));
  out.right.resize(static_cast<size_t>(length));
  const int64_t last = take.length() - 1;
  for (int64_t i = 0; i < length; ++i) {
    const double pos = static_cast<double>(i) * ratio;
    const int64_t a = std::min<int64_t>(static_cast<int64_t>(pos), last);
    const int64_t b = std::min<int64_t>(a + 1, last);
    const float frac = static_cast<float>(pos - static_cast<double>(a));
    out.left[static_cast<size_t>(i)] = take.left[a] + (take.left[b] - take.left[a]) * frac;
    out.right[static_cast<size_t>(i)] = take.right[a] + (take.right[b] - take.right[a]) * frac;
  }
  limitTakePeak(out);
  return out;
}

float limitTakePeak(Take& take, double ceilingDb) noexcept {
  float peak = 0.0f;
  for (const auto* channel : {&take.left, &take.right})
    for (const float sample : *channel) peak = std::max(peak, std::fabs(sample));
  const auto ceiling = static_cast<float>(std::pow(10.0, ceilingDb / 20.0));
  if (!(peak > ceiling)) return 1.0f;  // also leaves an all-NaN take alone (nothing to scale by)
  float gain = ceiling / peak;
  // float rounding can leave peak * gain a hair over the ceiling: step the gain down until not
  while (peak * gain > ceiling) gain = std::nextafter(gain, 0.0f);
  for (auto* channel : {&take.left, &take.right})
    for (float& sample : *channel) sample *= gain;
  return gain;
}

}  // namespace sa3
