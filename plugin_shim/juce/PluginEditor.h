// Minimal editor: prompt, negative prompt, mode, bars, seed, model menu, init noise level, exact
// length, steps, scale lock, LoRA slots (adapter menu and strength each), daemon endpoint, render,
// takes and status.
// Message thread only.
#pragma once

#include <juce_audio_processors/juce_audio_processors.h>

#include <array>

#include "PluginProcessor.h"

class Sa3AudioProcessorEditor : public juce::AudioProcessorEditor, private juce::Timer {
 public:
  explicit Sa3AudioProcessorEditor(Sa3AudioProcessor&);
  ~Sa3AudioProcessorEditor() override;
  void paint(juce::Graphics&) override;
  void resized() override;

 private:
  void timerCallback() override;  // status, take list, endpoint, model menu and the model's steps, 10 times a second
  void applyEndpoint();           // the endpoint field's text to the core (return key or focus lost)
  void refreshModelMenu();        // the daemon's models and the choice, as the core has them
  void refreshLoraMenus();        // the daemon's adapters (those that fit the job's model first) and the slots
  using SliderAttachment = juce::AudioProcessorValueTreeState::SliderAttachment;
  using ComboAttachment = juce::AudioProcessorValueTreeState::ComboBoxAttachment;
  using ButtonAttachment = juce::AudioProcessorValueTreeState::ButtonAttachment;

  Sa3AudioProcessor& processor_;
  juce::TextEditor prompt_, negativePrompt_, endpoint_;
  juce::ComboBox mode_, model_, takes_;
  juce::Slider bars_, seed_, steps_, scaleLock_, initNoiseLevel_;
  juce::Label negativeLabel_, modeLabel_, barsLabel_, seedLabel_, modelLabel_, noiseLabel_, stepsLabel_, modelSteps_,
      scaleLockLabel_, endpointLabel_, status_;
  juce::TextButton render_{"Render"};
  juce::ToggleButton exactLength_{"exact length (no 6 s headroom)"};  // protocol 1.6
  std::unique_ptr<ButtonAttachment> exactLengthAttachment_;
  std::unique_ptr<ComboAttachment> modeAttachment_;
  std::unique_ptr<SliderAttachment> barsAttachment_, seedAttachment_, stepsAttachment_, scaleLockAttachment_,
      noiseAttachment_;
  std::vector<std::string> menuModels_;  // the model name behind each menu item (item id = index + 1; "" = default)
  // LoRA slots (protocol 1.5): an adapter menu and a strength slider (automatable parameter) each
  std::array<juce::Label, sa3::kLoraSlots> loraLabels_;
  std::array<juce::ComboBox, sa3::kLoraSlots> loraMenus_;
  std::array<juce::Slider, sa3::kLoraSlots> loraStrengths_;
  std::array<std::unique_ptr<SliderAttachment>, sa3::kLoraSlots> loraAttachments_;
  std::array<std::vector<std::string>, sa3::kLoraSlots> menuLoras_;  // the adapter behind each item (id = index + 1)
  uint64_t shownModelsSerial_ = static_cast<uint64_t>(-1);
  uint64_t shownLorasSerial_ = static_cast<uint64_t>(-1), lorasShownForModels_ = static_cast<uint64_t>(-1);
  size_t shownTakes_ = static_cast<size_t>(-1);
  int shownModelSteps_ = -1;
};
