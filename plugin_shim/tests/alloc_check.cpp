// Allocation check for the audio-thread contract (processor.h).
//
// Replaces the global operator new/delete with versions that count every allocation made
// while the calling thread is inside Processor::processBlock, then plays a simulated host:
// varying block sizes, a loop range, a render request sent to a real daemon, and playback
// of the take that comes back, while the "message thread" reads state and switches takes.
// Prints one JSON line; tests/plugin_shim/test_realtime.py asserts allocations == 0.
//
// usage: sa3_alloc_check ENDPOINT SAMPLE_RATE TIMEOUT_SECONDS
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "sa3/processor.h"

namespace {
thread_local bool inAudioCallback = false;
std::atomic<long> audioAllocations{0};

void* countedAlloc(std::size_t size) {
  if (inAudioCallback) audioAllocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* countedAlignedAlloc(std::size_t size, std::align_val_t align) {
  if (inAudioCallback) audioAllocations.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return countedAlloc(size); }
void* operator new[](std::size_t size) { return countedAlloc(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return countedAlloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return countedAlloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t a) { return countedAlignedAlloc(size, a); }
void* operator new[](std::size_t size, std::align_val_t a) { return countedAlignedAlloc(size, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ENDPOINT SAMPLE_RATE TIMEOUT_SECONDS\n", argv[0]);
    return 2;
  }
  // The counter itself must see allocations, or a zero below would prove nothing.
  inAudioCallback = true;
  delete new std::vector<int>(16);
  inAudioCallback = false;
  const bool counterWorks = audioAllocations.exchange(0) >= 1;

  const double rate = std::atof(argv[2]);
  const double timeout = std::atof(argv[3]);
  sa3::ProcessorConfig config;
  config.endpoint = argv[1];
  config.maxCaptureSeconds = 30.0;
  config.contextSeconds = 1.0;
  sa3::Processor processor(config);
  processor.prepareToPlay(rate, 4096);
  processor.setPrompt("allocation check");
  processor.setSteps(2);

  // Loop bars 2-3 of 4/4 at 120 bpm (quarter notes 4 to 12); play from bar 1 and cycle.
  const double bpm = 120.0, loopStart = 4.0, loopEnd = 12.0;
  const int64_t loopEndSample = static_cast<int64_t>(std::llround(loopEnd * 60.0 / bpm * rate));
  const int64_t loopStartSample = static_cast<int64_t>(std::llround(loopStart * 60.0 / bpm * rate));
  const int sizes[] = {1, 7, 64, 480, 512, 4096, 333, 2048, 128};
  std::vector<float> left(4096), right(4096);
  std::atomic<bool> stop{false};
  std::atomic<long> blocks{0};
  std::atomic<bool> takeHeard{false};

  std::thread audio([&] {
    int64_t timeline = 0;
    size_t sizeIndex = 0;
    bool renderAsked = false;
    while (!stop.load()) {
      const int n = sizes[sizeIndex++ % (sizeof(sizes) / sizeof(sizes[0]))];
      const int64_t run = std::min<int64_t>(n, loopEndSample - timeline);  // a host splits blocks at the loop end
      for (int64_t i = 0; i < run; ++i) {
        left[i] = 0.25f * std::sin(0.01f * static_cast<float>(timeline + i));
        right[i] = left[i];
      }
      sa3::PositionInfo pos;
      pos.bpm = bpm;
      pos.timeSigNumerator = 4;
      pos.timeSigDenominator = 4;
      pos.timeInSamples = timeline;
      pos.ppqPosition = static_cast<double>(timeline) / rate * bpm / 60.0;
      pos.isPlaying = true;
      pos.isLooping = true;
      pos.loopStartPpq = loopStart;
      pos.loopEndPpq = loopEnd;
      float* channels[2] = {left.data(), right.data()};
      inAudioCallback = true;
      // The numeric setters, as the JUCE wrapper pushes its parameters at the top of every block.
      processor.setSteps(2);
      processor.setScaleLockDb(6.0);   // the prompt names no key: any model renders it
      processor.setExactLength(true);  // protocol 1.6: the daemon's tiny sa3 model takes it (and changes nothing)
      // no slot names an adapter (the daemon has none): the strengths are set all the same
      for (int slot = 0; slot < sa3::kLoraSlots; ++slot) processor.setLoraStrength(slot, 0.5);
      processor.processBlock(channels, 2, static_cast<int>(run), pos);
      if (timeline >= loopEndSample - run && !renderAsked) {
        processor.requestRender();  // from the audio thread: must be lock- and allocation-free
        renderAsked = true;
      }
      inAudioCallback = false;
      for (int64_t i = 0; i < run; ++i)
        if (left[i] != 0.25f * std::sin(0.01f * static_cast<float>(timeline + i))) takeHeard.store(true);
      timeline += run;
      if (timeline >= loopEndSample) timeline = loopStartSample;
      blocks.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });

  // The message thread: read state and flip takes while audio runs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
  long flips = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    (void)processor.getStateInformation();
    if (processor.rendersCompleted() > 0) {
      processor.selectTake(flips % 2 == 0 ? -1 : 0);
      if (++flips > 40 && takeHeard.load()) break;
    }
  }
  processor.selectTake(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop.store(true);
  audio.join();
  std::printf(
      "{\"counter_works\": %s, \"allocations\": %ld, \"blocks\": %ld, \"renders\": %llu, \"take_heard\": %s, "
      "\"status\": \"%s\"}\n",
      counterWorks ? "true" : "false", audioAllocations.load(), blocks.load(),
      static_cast<unsigned long long>(processor.rendersCompleted()), takeHeard.load() ? "true" : "false",
      processor.statusText().c_str());
  return 0;
}
