// The sa3 plugin for DAWs: juce::AudioProcessor around sa3::Processor (plugin_shim/include).
// Every numeric setting is an automatable parameter so hosts without a playhead or UI can
// drive it; the prompt, the negative prompt, the model choice, the LoRA slots' adapters and the daemon
// endpoint travel in the state (the models and adapters a daemon has are known only at run time, so
// they are no parameters; the LoRA strengths are).
#pragma once

#include <juce_audio_processors/juce_audio_processors.h>

#include <atomic>

#include "sa3/processor.h"

class Sa3AudioProcessor : public juce::AudioProcessor {
 public:
  Sa3AudioProcessor();
  ~Sa3AudioProcessor() override = default;

  void prepareToPlay(double sampleRate, int samplesPerBlock) override;
  void releaseResources() override;
  void reset() override;
  bool isBusesLayoutSupported(const BusesLayout& layouts) const override;
  void processBlock(juce::AudioBuffer<float>&, juce::MidiBuffer&) override;
  using AudioProcessor::processBlock;

  juce::AudioProcessorEditor* createEditor() override;
  bool hasEditor() const override { return true; }

  const juce::String getName() const override { return "sa3"; }
  bool acceptsMidi() const override { return false; }
  bool producesMidi() const override { return false; }
  bool isMidiEffect() const override { return false; }
  double getTailLengthSeconds() const override { return 0.0; }

  int getNumPrograms() override { return 1; }
  int getCurrentProgram() override { return 0; }
  void setCurrentProgram(int) override {}
  const juce::String getProgramName(int) override { return "default"; }
  void changeProgramName(int, const juce::String&) override {}

  void getStateInformation(juce::MemoryBlock& destData) override;
  void setStateInformation(const void* data, int sizeInBytes) override;

  sa3::Processor& core() { return core_; }
  juce::AudioProcessorValueTreeState& parameters() { return parameters_; }
  /// The parameter ID of LoRA slot `slot`'s strength (0-based slot; "lora_1_strength" ...).
  static juce::String loraStrengthId(int slot) { return "lora_" + juce::String(slot + 1) + "_strength"; }

 private:
  static juce::AudioProcessorValueTreeState::ParameterLayout createLayout();
  void pushParametersToCore() noexcept;  // audio thread: atomics only
  void pullParametersFromCore();         // after a state load (message thread)

  sa3::Processor core_;
  juce::AudioProcessorValueTreeState parameters_;
  // Raw parameter values, read lock-free on the audio thread.
  std::atomic<float>* followHost_ = nullptr;
  std::atomic<float>* bpm_ = nullptr;
  std::atomic<float>* meterNumerator_ = nullptr;
  std::atomic<float>* meterDenominator_ = nullptr;  // choice index into kDenominators
  std::atomic<float>* regionStart_ = nullptr;
  std::atomic<float>* regionEnd_ = nullptr;
  std::atomic<float>* mode_ = nullptr;
  std::atomic<float>* bars_ = nullptr;
  std::atomic<float>* seed_ = nullptr;
  std::atomic<float>* steps_ = nullptr;
  std::atomic<float>* scaleLock_ = nullptr;                  // whole dB; -1 = the model's setting (Model)
  std::atomic<float>* initNoiseLevel_ = nullptr;             // transform: kMinInitNoiseLevel to 1
  std::atomic<float>* exactLength_ = nullptr;                // protocol 1.6: on (1) asks for no released headroom
  std::atomic<float>* loraStrengths_[sa3::kLoraSlots] = {};  // -kMaxLoraStrength to kMaxLoraStrength
  std::atomic<float>* render_ = nullptr;
  bool renderWasOn_ = false;

  JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(Sa3AudioProcessor)
};
