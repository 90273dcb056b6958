#include "PluginProcessor.h"

#include <cstdlib>

#include "PluginEditor.h"
#include "sa3/protocol.h"

namespace {

constexpr int kDenominators[] = {1, 2, 4, 8, 16, 32};
constexpr char kWrapperMagic[4] = {'S', 'A', '3', 'J'};
constexpr juce::int32 kWrapperVersion = 1;
// The "Scale lock" parameter counts whole dB; one step below Off means the model's setting.
constexpr int kScaleLockModel = -1;
constexpr int kScaleLockMax = static_cast<int>(sa3::kMaxScaleLockDb);

juce::String scaleLockText(int db, int /*maximumLength*/) {
  if (db <= kScaleLockModel) return "Model";
  if (db == 0) return "Off";
  return juce::String(db) + " dB";
}

int scaleLockFromText(const juce::String& text) {
  const auto t = text.trim();
  if (t.equalsIgnoreCase("model")) return kScaleLockModel;
  if (t.equalsIgnoreCase("off")) return 0;
  return juce::jlimit(kScaleLockModel, kScaleLockMax, t.getIntValue());
}

// The "Steps" parameter: 0 means the model's default (the request leaves `steps` out and the
// daemon's model decides: 15 for the shipped one; the editor shows the number the daemon gave).
constexpr int kStepsModel = 0;

juce::String stepsText(int steps, int /*maximumLength*/) {
  return steps <= kStepsModel ? juce::String("Model") : juce::String(steps);
}

int stepsFromText(const juce::String& text) {
  const auto t = text.trim();
  if (t.equalsIgnoreCase("model")) return kStepsModel;
  return juce::jlimit(kStepsModel, sa3::kMaxSteps, t.getIntValue());
}

sa3::ProcessorConfig makeConfig() {
  sa3::ProcessorConfig config;
  // The daemon address: saved in the state; SA3_ENDPOINT sets the default for new instances.
  if (const char* endpoint = std::getenv("SA3_ENDPOINT"); endpoint != nullptr && *endpoint != '\0')
    config.endpoint = endpoint;
  return config;
}

}  // namespace

Sa3AudioProcessor::Sa3AudioProcessor()
    : AudioProcessor(BusesProperties()
                         .withInput("Input", juce::AudioChannelSet::stereo(), true)
                         .withOutput("Output", juce::AudioChannelSet::stereo(), true)),
      core_(makeConfig()),
      parameters_(*this, nullptr, "sa3", createLayout()) {
  followHost_ = parameters_.getRawParameterValue("follow_host");
  bpm_ = parameters_.getRawParameterValue("bpm");
  meterNumerator_ = parameters_.getRawParameterValue("meter_numerator");
  meterDenominator_ = parameters_.getRawParameterValue("meter_denominator");
  regionStart_ = parameters_.getRawParameterValue("region_start");
  regionEnd_ = parameters_.getRawParameterValue("region_end");
  mode_ = parameters_.getRawParameterValue("mode");
  bars_ = parameters_.getRawParameterValue("bars");
  seed_ = parameters_.getRawParameterValue("seed");
  steps_ = parameters_.getRawParameterValue("steps");
  scaleLock_ = parameters_.getRawParameterValue("scale_lock");
  initNoiseLevel_ = parameters_.getRawParameterValue("init_noise_level");
  exactLength_ = parameters_.getRawParameterValue("exact_length");
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot)
    loraStrengths_[slot] = parameters_.getRawParameterValue(loraStrengthId(slot));
  render_ = parameters_.getRawParameterValue("render");
  pushParametersToCore();
}

juce::AudioProcessorValueTreeState::ParameterLayout Sa3AudioProcessor::createLayout() {
  using namespace juce;
  AudioProcessorValueTreeState::ParameterLayout layout;
  auto id = [](const char* name) { return ParameterID{name, 1}; };
  layout.add(std::make_unique<AudioParameterBool>(id("follow_host"), "Follow host", true));
  layout.add(std::make_unique<AudioParameterFloat>(id("bpm"), "Tempo", NormalisableRange<float>(20.0f, 999.0f, 0.01f),
                                                   120.0f, AudioParameterFloatAttributes().withLabel("bpm")));
  layout.add(std::make_unique<AudioParameterInt>(id("meter_numerator"), "Meter numerator", 1, 64, 4));
  layout.add(std::make_unique<AudioParameterChoice>(id("meter_denominator"), "Meter denominator",
                                                    StringArray{"1", "2", "4", "8", "16", "32"}, 2));
  layout.add(std::make_unique<AudioParameterFloat>(id("region_start"), "Region start",
                                                   NormalisableRange<float>(1.0f, 1000.0f, 0.25f), 1.0f,
                                                   AudioParameterFloatAttributes().withLabel("bar")));
  layout.add(std::make_unique<AudioParameterFloat>(id("region_end"), "Region end",
                                                   NormalisableRange<float>(1.0f, 1000.0f, 0.25f), 5.0f,
                                                   AudioParameterFloatAttributes().withLabel("bar")));
  // Transform came last (protocol 1.4) so the other modes keep their indices in saved states.
  layout.add(std::make_unique<AudioParameterChoice>(id("mode"), "Mode",
                                                    StringArray{"generate", "inpaint", "continue", "transform"}, 1));
  layout.add(std::make_unique<AudioParameterInt>(id("bars"), "Bars", 1, 64, 4));
  layout.add(std::make_unique<AudioParameterInt>(id("seed"), "Seed", 0, 99999, 0));
  layout.add(std::make_unique<AudioParameterInt>(
      id("steps"), "Steps", kStepsModel, sa3::kMaxSteps, kStepsModel,
      AudioParameterIntAttributes().withStringFromValueFunction(stepsText).withValueFromStringFunction(stepsFromText)));
  // Model (the daemon's model decides: 12 dB for the shipped one), Off, or 1-48 dB.
  layout.add(std::make_unique<AudioParameterInt>(id("scale_lock"), "Scale lock", kScaleLockModel, kScaleLockMax,
                                                 kScaleLockModel,
                                                 AudioParameterIntAttributes()
                                                     .withStringFromValueFunction(scaleLockText)
                                                     .withValueFromStringFunction(scaleLockFromText)));
  // Transform's init noise level (protocol 1.4): near 0 keeps the selection, 1 keeps only its length.
  // Version 2 of the parameter list: hosts that order parameters by it (AU) keep the older ones.
  layout.add(std::make_unique<AudioParameterFloat>(
      ParameterID{"init_noise_level", 2}, "Init noise level",
      NormalisableRange<float>(static_cast<float>(sa3::kMinInitNoiseLevel), 1.0f, 0.01f),
      static_cast<float>(sa3::kDefaultInitNoiseLevel)));
  layout.add(std::make_unique<AudioParameterBool>(id("render"), "Render", false));
  // The LoRA slots' strengths (protocol 1.5; the adapters themselves are in the state): 0 leaves a
  // slot's adapter out, 1 is as trained. Version 3 of the parameter list, after the older ones.
  const auto strength = static_cast<float>(sa3::kMaxLoraStrength);
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot)
    layout.add(std::make_unique<AudioParameterFloat>(
        ParameterID{loraStrengthId(slot), 3}, "LoRA " + String(slot + 1) + " strength",
        NormalisableRange<float>(-strength, strength, 0.01f), static_cast<float>(sa3::kDefaultLoraStrength)));
  // Exact length (protocol 1.6): the released models make exactly the region's length, without
  // their 6 s of headroom. Off by default; version 4 of the parameter list, after the older ones.
  layout.add(std::make_unique<AudioParameterBool>(ParameterID{"exact_length", 4}, "Exact length", false));
  return layout;
}

void Sa3AudioProcessor::pushParametersToCore() noexcept {
  core_.setBpm(bpm_->load());
  const int denominatorIndex = juce::jlimit(0, 5, static_cast<int>(meterDenominator_->load()));
  core_.setMeter(static_cast<int>(meterNumerator_->load()), kDenominators[denominatorIndex]);
  core_.setRegionBars(regionStart_->load(), regionEnd_->load());
  core_.setMode(static_cast<sa3::Mode>(juce::jlimit(0, 3, static_cast<int>(mode_->load()))));
  core_.setBars(bars_->load());
  core_.setSeed(static_cast<uint64_t>(seed_->load()));
  core_.setSteps(static_cast<int>(steps_->load()));
  const int scaleLock = juce::roundToInt(scaleLock_->load());
  core_.setScaleLockDb(scaleLock <= kScaleLockModel ? -1.0 : static_cast<double>(scaleLock));
  core_.setInitNoiseLevel(initNoiseLevel_->load());
  core_.setExactLength(exactLength_->load() >= 0.5f);
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot) core_.setLoraStrength(slot, loraStrengths_[slot]->load());
}

void Sa3AudioProcessor::pullParametersFromCore() {
  auto set = [this](const char* name, float value) {
    if (auto* p = parameters_.getParameter(name)) p->setValueNotifyingHost(p->convertTo0to1(value));
  };
  set("bpm", static_cast<float>(core_.bpm()));
  set("meter_numerator", static_cast<float>(core_.meter().numerator));
  int denominatorIndex = 2;
  for (int i = 0; i < 6; ++i)
    if (kDenominators[i] == core_.meter().denominator) denominatorIndex = i;
  set("meter_denominator", static_cast<float>(denominatorIndex));
  set("region_start", static_cast<float>(core_.regionStartBar()));
  set("region_end", static_cast<float>(core_.regionEndBar()));
  set("mode", static_cast<float>(static_cast<int>(core_.mode())));
  set("bars", static_cast<float>(core_.bars()));
  set("seed", static_cast<float>(core_.seed()));
  set("steps", static_cast<float>(core_.steps()));
  const double scaleLock = core_.scaleLockDb();  // whole dB here; a finer value from elsewhere rounds
  set("scale_lock", scaleLock < 0.0 ? static_cast<float>(kScaleLockModel)
                                    : static_cast<float>(juce::jlimit(0.0, sa3::kMaxScaleLockDb, scaleLock)));
  set("init_noise_level", static_cast<float>(core_.initNoiseLevel()));
  set("exact_length", core_.exactLength() ? 1.0f : 0.0f);
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot)
    set(loraStrengthId(slot).toRawUTF8(), static_cast<float>(core_.loraStrength(slot)));
}

void Sa3AudioProcessor::prepareToPlay(double sampleRate, int samplesPerBlock) {
  core_.prepareToPlay(sampleRate, samplesPerBlock);
}

void Sa3AudioProcessor::releaseResources() { core_.releaseResources(); }

void Sa3AudioProcessor::reset() { core_.reset(); }

bool Sa3AudioProcessor::isBusesLayoutSupported(const BusesLayout& layouts) const {
  const auto out = layouts.getMainOutputChannelSet();
  if (out != juce::AudioChannelSet::mono() && out != juce::AudioChannelSet::stereo()) return false;
  return layouts.getMainInputChannelSet() == out;
}

void Sa3AudioProcessor::processBlock(juce::AudioBuffer<float>& buffer, juce::MidiBuffer&) {
  juce::ScopedNoDenormals noDenormals;
  pushParametersToCore();
  const bool renderOn = render_->load() >= 0.5f;
  if (renderOn && !renderWasOn_) core_.requestRender();  // rising edge of the trigger parameter
  renderWasOn_ = renderOn;

  sa3::PositionInfo position;  // empty: free-running timeline at the plugin's tempo and meter
  if (followHost_->load() >= 0.5f) {
    if (auto* head = getPlayHead()) {
      if (const auto info = head->getPosition()) {
        if (const auto bpm = info->getBpm()) position.bpm = *bpm;
        if (const auto sig = info->getTimeSignature()) {
          position.timeSigNumerator = sig->numerator;
          position.timeSigDenominator = sig->denominator;
        }
        if (const auto ppq = info->getPpqPosition()) position.ppqPosition = *ppq;
        if (const auto bar = info->getPpqPositionOfLastBarStart()) position.ppqPositionOfLastBarStart = *bar;
        if (const auto samples = info->getTimeInSamples()) position.timeInSamples = *samples;
        position.isPlaying = info->getIsPlaying();
        position.isLooping = info->getIsLooping();
        if (const auto loop = info->getLoopPoints()) {
          position.loopStartPpq = loop->ppqStart;
          position.loopEndPpq = loop->ppqEnd;
        }
      }
    }
  }
  core_.processBlock(buffer.getArrayOfWritePointers(), buffer.getNumChannels(), buffer.getNumSamples(), position);
}

juce::AudioProcessorEditor* Sa3AudioProcessor::createEditor() { return new Sa3AudioProcessorEditor(*this); }

void Sa3AudioProcessor::getStateInformation(juce::MemoryBlock& destData) {
  // "SA3J" | version | follow_host | the core's own versioned state (settings, prompt, takes)
  pushParametersToCore();  // the parameters are the truth for numbers, even before any block ran
  const auto core = core_.getStateInformation();
  juce::MemoryOutputStream out(destData, false);
  out.write(kWrapperMagic, 4);
  out.writeInt(kWrapperVersion);
  out.writeBool(followHost_->load() >= 0.5f);
  out.write(core.data(), core.size());
}

void Sa3AudioProcessor::setStateInformation(const void* data, int sizeInBytes) {
  if (data == nullptr || sizeInBytes < 9 || std::memcmp(data, kWrapperMagic, 4) != 0) return;
  juce::MemoryInputStream in(data, static_cast<size_t>(sizeInBytes), false);
  in.skipNextBytes(4);
  if (in.readInt() != kWrapperVersion) return;
  const bool followHost = in.readBool();
  const auto* core = static_cast<const char*>(data) + in.getPosition();
  if (!core_.setStateInformation(core, static_cast<size_t>(sizeInBytes) - static_cast<size_t>(in.getPosition())))
    return;
  if (auto* p = parameters_.getParameter("follow_host")) p->setValueNotifyingHost(followHost ? 1.0f : 0.0f);
  pullParametersFromCore();
}

juce::AudioProcessor* JUCE_CALLTYPE createPluginFilter() { return new Sa3AudioProcessor(); }
