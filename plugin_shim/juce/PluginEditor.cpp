#include "PluginEditor.h"

Sa3AudioProcessorEditor::Sa3AudioProcessorEditor(Sa3AudioProcessor& p) : AudioProcessorEditor(&p), processor_(p) {
  prompt_.setText(p.core().prompt(), juce::dontSendNotification);
  prompt_.setTextToShowWhenEmpty("describe the sound", juce::Colours::grey);
  prompt_.onTextChange = [this] { processor_.core().setPrompt(prompt_.getText().toStdString()); };
  addAndMakeVisible(prompt_);

  mode_.addItemList({"generate", "inpaint", "continue"}, 1);
  modeAttachment_ = std::make_unique<ComboAttachment>(p.parameters(), "mode", mode_);
  modeLabel_.setText("Mode", juce::dontSendNotification);
  addAndMakeVisible(mode_);
  addAndMakeVisible(modeLabel_);

  for (auto* slider : {&bars_, &seed_, &scaleLock_}) {
    slider->setSliderStyle(juce::Slider::IncDecButtons);
    slider->setTextBoxStyle(juce::Slider::TextBoxLeft, false, 70, 24);
    addAndMakeVisible(slider);
  }
  barsAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "bars", bars_);
  seedAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "seed", seed_);
  // Shows the parameter's text: Model, Off or N dB (notes outside a key the prompt names).
  scaleLockAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "scale_lock", scaleLock_);
  barsLabel_.setText("Bars", juce::dontSendNotification);
  seedLabel_.setText("Seed", juce::dontSendNotification);
  scaleLockLabel_.setText("Scale lock", juce::dontSendNotification);
  addAndMakeVisible(barsLabel_);
  addAndMakeVisible(seedLabel_);
  addAndMakeVisible(scaleLockLabel_);

  render_.onClick = [this] { processor_.core().requestRender(); };
  addAndMakeVisible(render_);

  takes_.setTextWhenNothingSelected("dry (no take)");
  takes_.onChange = [this] { processor_.core().selectTake(takes_.getSelectedId() - 2); };
  addAndMakeVisible(takes_);
  addAndMakeVisible(status_);

  setSize(480, 256);
  startTimerHz(10);
}

Sa3AudioProcessorEditor::~Sa3AudioProcessorEditor() { stopTimer(); }

void Sa3AudioProcessorEditor::paint(juce::Graphics& g) {
  g.fillAll(getLookAndFeel().findColour(juce::ResizableWindow::backgroundColourId));
}

void Sa3AudioProcessorEditor::resized() {
  auto area = getLocalBounds().reduced(10);
  prompt_.setBounds(area.removeFromTop(28));
  area.removeFromTop(8);
  auto row = area.removeFromTop(28);
  modeLabel_.setBounds(row.removeFromLeft(45));
  mode_.setBounds(row.removeFromLeft(110));
  barsLabel_.setBounds(row.removeFromLeft(40));
  bars_.setBounds(row.removeFromLeft(120));
  seedLabel_.setBounds(row.removeFromLeft(40));
  seed_.setBounds(row);
  area.removeFromTop(8);
  row = area.removeFromTop(28);
  scaleLockLabel_.setBounds(row.removeFromLeft(80));
  scaleLock_.setBounds(row.removeFromLeft(150));
  area.removeFromTop(8);
  row = area.removeFromTop(28);
  render_.setBounds(row.removeFromLeft(100));
  row.removeFromLeft(10);
  takes_.setBounds(row);
  area.removeFromTop(8);
  status_.setBounds(area.removeFromTop(28));
}

void Sa3AudioProcessorEditor::timerCallback() {
  auto& core = processor_.core();
  juce::String text = core.statusText();
  if (core.status() == sa3::Status::Rendering) text << "  " << juce::roundToInt(core.progress() * 100.0f) << "%";
  status_.setText(text, juce::dontSendNotification);
  const size_t count = core.numTakes();
  if (count != shownTakes_) {
    shownTakes_ = count;
    takes_.clear(juce::dontSendNotification);
    takes_.addItem("dry (no take)", 1);
    for (size_t i = 0; i < count; ++i) {
      const auto info = core.takeInfo(i);
      takes_.addItem("take " + juce::String(static_cast<juce::int64>(info.id)) + ": " + juce::String(info.prompt) +
                         " (seed " + juce::String(static_cast<juce::int64>(info.seed)) + ")",
                     static_cast<int>(i) + 2);
    }
  }
  takes_.setSelectedId(core.activeTake() + 2, juce::dontSendNotification);
}
