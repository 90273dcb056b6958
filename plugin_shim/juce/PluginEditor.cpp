#include "PluginEditor.h"

#include <algorithm>

namespace {

// Layout in pixels. An IncDecButtons slider is its text box plus two buttons side by side; JUCE
// insets the pair by 2 px a side, and LookAndFeel_V4 draws a button's text inside indents of
// about 13 px, so a button much under 26 px shows its "+" as "..". Every such slider gets the
// same width, and the rows below are checked to fit the editor at compile time.
constexpr int kMargin = 10, kGap = 8, kRowHeight = 28;
constexpr int kTextBoxWidth = 70;
constexpr int kIncDecButtonWidth = 30;
constexpr int kIncDecWidth = kTextBoxWidth + 2 * kIncDecButtonWidth;
constexpr int kLabelWidth = 44, kWideLabelWidth = 76;
constexpr int kModeWidth = 110, kModelStepsWidth = 130, kRenderWidth = 100;
constexpr int kModelMenuWidth = 220, kNoiseSliderMinWidth = 160, kExactLengthWidth = 260;
constexpr int kLoraLabelWidth = 56, kLoraMenuWidth = 300, kLoraSliderMinWidth = 140;
constexpr int kEditorWidth = 540;
// prompt; negative prompt; mode, bars, seed; model, noise level; exact length; steps, scale lock; one row
// per LoRA slot; daemon; render, takes; status
constexpr int kRows = 9 + sa3::kLoraSlots;
constexpr int kEditorHeight = 2 * kMargin + kRows * kRowHeight + (kRows - 1) * kGap;
constexpr int kInnerWidth = kEditorWidth - 2 * kMargin;
static_assert(kLabelWidth + kModeWidth + 2 * (kGap + kLabelWidth + kIncDecWidth) <= kInnerWidth,
              "mode, bars and seed must fit one row");
static_assert(kLabelWidth + kModelMenuWidth + kGap + kLabelWidth + kNoiseSliderMinWidth <= kInnerWidth,
              "the model menu and the noise level must fit one row");
static_assert(kLabelWidth + kExactLengthWidth <= kInnerWidth, "the exact length toggle must fit under the model menu");
static_assert(kLoraLabelWidth + kLoraMenuWidth + kGap + kLoraSliderMinWidth <= kInnerWidth,
              "a LoRA slot's menu and strength must fit one row");
static_assert(kLabelWidth + kIncDecWidth + kModelStepsWidth + kGap + kWideLabelWidth + kIncDecWidth <= kInnerWidth,
              "steps and scale lock must fit one row");

}  // namespace

Sa3AudioProcessorEditor::Sa3AudioProcessorEditor(Sa3AudioProcessor& p) : AudioProcessorEditor(&p), processor_(p) {
  prompt_.setText(p.core().prompt(), juce::dontSendNotification);
  prompt_.setTextToShowWhenEmpty("describe the sound", juce::Colours::grey);
  prompt_.onTextChange = [this] { processor_.core().setPrompt(prompt_.getText().toStdString()); };
  addAndMakeVisible(prompt_);

  // What guidance steers away from (protocol 1.4): sent only when not empty; saved in the project.
  negativeLabel_.setText("Avoid", juce::dontSendNotification);
  negativePrompt_.setText(p.core().negativePrompt(), juce::dontSendNotification);
  negativePrompt_.setTextToShowWhenEmpty("negative prompt (optional): what to steer away from", juce::Colours::grey);
  negativePrompt_.onTextChange = [this] {
    processor_.core().setNegativePrompt(negativePrompt_.getText().toStdString());
  };
  addAndMakeVisible(negativeLabel_);
  addAndMakeVisible(negativePrompt_);

  mode_.addItemList({"generate", "inpaint", "continue", "transform"}, 1);
  modeAttachment_ = std::make_unique<ComboAttachment>(p.parameters(), "mode", mode_);
  modeLabel_.setText("Mode", juce::dontSendNotification);
  addAndMakeVisible(mode_);
  addAndMakeVisible(modeLabel_);

  for (auto* slider : {&bars_, &seed_, &steps_, &scaleLock_}) {
    slider->setSliderStyle(juce::Slider::IncDecButtons);
    slider->setTextBoxStyle(juce::Slider::TextBoxLeft, false, kTextBoxWidth, kRowHeight - 4);
    addAndMakeVisible(slider);
  }
  barsAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "bars", bars_);
  seedAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "seed", seed_);
  // Shows the parameter's text: Model (the daemon's model decides, the label beside says how
  // many that is) or a number of sampler steps.
  stepsAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "steps", steps_);
  // Shows the parameter's text: Model, Off or N dB (notes outside a key the prompt names).
  scaleLockAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "scale_lock", scaleLock_);
  barsLabel_.setText("Bars", juce::dontSendNotification);
  seedLabel_.setText("Seed", juce::dontSendNotification);
  stepsLabel_.setText("Steps", juce::dontSendNotification);
  scaleLockLabel_.setText("Scale lock", juce::dontSendNotification);
  modelSteps_.setColour(juce::Label::textColourId, juce::Colours::grey);
  for (auto* label : {&barsLabel_, &seedLabel_, &stepsLabel_, &modelSteps_, &scaleLockLabel_}) addAndMakeVisible(label);

  // The daemon's models (its capabilities reply); the choice is saved in the project, not a parameter.
  modelLabel_.setText("Model", juce::dontSendNotification);
  model_.setTextWhenNothingSelected("daemon's default");
  model_.onChange = [this] {
    const int index = model_.getSelectedId() - 1;
    if (index >= 0 && index < static_cast<int>(menuModels_.size()))
      processor_.core().setModel(menuModels_[static_cast<size_t>(index)]);
  };
  addAndMakeVisible(modelLabel_);
  addAndMakeVisible(model_);

  // Transform's init noise level: near 0 keeps the selection, 1 keeps only its length.
  noiseLabel_.setText("Noise", juce::dontSendNotification);
  initNoiseLevel_.setSliderStyle(juce::Slider::LinearHorizontal);
  initNoiseLevel_.setTextBoxStyle(juce::Slider::TextBoxRight, false, 50, kRowHeight - 4);
  initNoiseLevel_.setTooltip("transform: how much of the selection is replaced by noise before it is made again");
  noiseAttachment_ = std::make_unique<SliderAttachment>(p.parameters(), "init_noise_level", initNoiseLevel_);
  addAndMakeVisible(noiseLabel_);
  addAndMakeVisible(initNoiseLevel_);

  // Exact length (protocol 1.6), under the model menu: whether the released models pad each take
  // with their 6 s of headroom. An automatable parameter, off by default.
  exactLength_.setTooltip(
      "released models: make exactly the region's length instead of padding it with 6 s of headroom; faster for "
      "short takes, and the same seed gives another take (the models were trained with the headroom). sa3's own "
      "models always make the exact length");
  exactLengthAttachment_ = std::make_unique<ButtonAttachment>(p.parameters(), "exact_length", exactLength_);
  addAndMakeVisible(exactLength_);

  // LoRA slots (protocol 1.5): the adapter of each is saved in the project, its strength is an
  // automatable parameter (0 leaves it out). Slots apply in order, top first.
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot) {
    auto& label = loraLabels_[static_cast<size_t>(slot)];
    auto& menu = loraMenus_[static_cast<size_t>(slot)];
    auto& strength = loraStrengths_[static_cast<size_t>(slot)];
    label.setText("LoRA " + juce::String(slot + 1), juce::dontSendNotification);
    menu.setTextWhenNothingSelected("none");
    menu.onChange = [this, slot] {
      const auto& names = menuLoras_[static_cast<size_t>(slot)];
      const int index = loraMenus_[static_cast<size_t>(slot)].getSelectedId() - 1;
      if (index >= 0 && index < static_cast<int>(names.size()))
        processor_.core().setLoraSlot(slot, names[static_cast<size_t>(index)]);
    };
    strength.setSliderStyle(juce::Slider::LinearHorizontal);
    strength.setTextBoxStyle(juce::Slider::TextBoxRight, false, 50, kRowHeight - 4);
    strength.setTooltip("strength: 1 as trained, 0 leaves the adapter out, negative pushes away from it");
    loraAttachments_[static_cast<size_t>(slot)] =
        std::make_unique<SliderAttachment>(p.parameters(), Sa3AudioProcessor::loraStrengthId(slot), strength);
    addAndMakeVisible(label);
    addAndMakeVisible(menu);
    addAndMakeVisible(strength);
  }

  // The daemon's address: saved in the project; new instances start from SA3_ENDPOINT (or
  // tcp://127.0.0.1:5557). Applied on return or when the field loses focus, not per keystroke.
  endpointLabel_.setText("Daemon", juce::dontSendNotification);
  endpoint_.setText(p.core().endpoint(), juce::dontSendNotification);
  endpoint_.setTextToShowWhenEmpty("tcp://127.0.0.1:5557", juce::Colours::grey);
  endpoint_.onReturnKey = [this] { applyEndpoint(); };
  endpoint_.onFocusLost = [this] { applyEndpoint(); };
  endpoint_.onEscapeKey = [this] { endpoint_.setText(processor_.core().endpoint(), juce::dontSendNotification); };
  addAndMakeVisible(endpointLabel_);
  addAndMakeVisible(endpoint_);

  render_.onClick = [this] { processor_.core().requestRender(); };
  addAndMakeVisible(render_);

  takes_.setTextWhenNothingSelected("dry (no take)");
  takes_.onChange = [this] { processor_.core().selectTake(takes_.getSelectedId() - 2); };
  addAndMakeVisible(takes_);
  addAndMakeVisible(status_);

  setSize(kEditorWidth, kEditorHeight);
  startTimerHz(10);
}

Sa3AudioProcessorEditor::~Sa3AudioProcessorEditor() { stopTimer(); }

void Sa3AudioProcessorEditor::paint(juce::Graphics& g) {
  g.fillAll(getLookAndFeel().findColour(juce::ResizableWindow::backgroundColourId));
}

void Sa3AudioProcessorEditor::resized() {
  auto area = getLocalBounds().reduced(kMargin);
  auto nextRow = [&area](bool first = false) {
    if (!first) area.removeFromTop(kGap);
    return area.removeFromTop(kRowHeight);
  };
  prompt_.setBounds(nextRow(true));

  auto row = nextRow();
  negativeLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  negativePrompt_.setBounds(row);

  row = nextRow();
  modeLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  mode_.setBounds(row.removeFromLeft(kModeWidth));
  row.removeFromLeft(kGap);
  barsLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  bars_.setBounds(row.removeFromLeft(kIncDecWidth));
  row.removeFromLeft(kGap);
  seedLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  seed_.setBounds(row.removeFromLeft(kIncDecWidth));

  row = nextRow();
  modelLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  model_.setBounds(row.removeFromLeft(kModelMenuWidth));
  row.removeFromLeft(kGap);
  noiseLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  initNoiseLevel_.setBounds(row);

  row = nextRow();
  row.removeFromLeft(kLabelWidth);  // under the model menu, which it belongs to
  exactLength_.setBounds(row.removeFromLeft(kExactLengthWidth));

  row = nextRow();
  stepsLabel_.setBounds(row.removeFromLeft(kLabelWidth));
  steps_.setBounds(row.removeFromLeft(kIncDecWidth));
  modelSteps_.setBounds(row.removeFromLeft(kModelStepsWidth));
  row.removeFromLeft(kGap);
  scaleLockLabel_.setBounds(row.removeFromLeft(kWideLabelWidth));
  scaleLock_.setBounds(row.removeFromLeft(kIncDecWidth));

  for (int slot = 0; slot < sa3::kLoraSlots; ++slot) {
    row = nextRow();
    loraLabels_[static_cast<size_t>(slot)].setBounds(row.removeFromLeft(kLoraLabelWidth));
    loraMenus_[static_cast<size_t>(slot)].setBounds(row.removeFromLeft(kLoraMenuWidth));
    row.removeFromLeft(kGap);
    loraStrengths_[static_cast<size_t>(slot)].setBounds(row);
  }

  row = nextRow();
  endpointLabel_.setBounds(row.removeFromLeft(kLabelWidth + 12));
  endpoint_.setBounds(row);

  row = nextRow();
  render_.setBounds(row.removeFromLeft(kRenderWidth));
  row.removeFromLeft(kGap);
  takes_.setBounds(row);

  status_.setBounds(nextRow());
}

void Sa3AudioProcessorEditor::applyEndpoint() {
  const auto text = endpoint_.getText().trim();
  if (text.isEmpty()) {  // nothing typed: keep the current daemon
    endpoint_.setText(processor_.core().endpoint(), juce::dontSendNotification);
    return;
  }
  // A form ZeroMQ refuses shows in the status line (the core says what is wrong), never crashes.
  processor_.core().setEndpoint(text.toStdString());
}

void Sa3AudioProcessorEditor::refreshModelMenu() {
  auto& core = processor_.core();
  const auto models = core.models();
  const std::string chosen = core.model();
  model_.clear(juce::dontSendNotification);
  menuModels_.clear();
  int selected = 0;
  if (models.empty()) {  // not heard from the daemon yet, or one before 1.4: it runs its own model
    menuModels_.push_back("");
    model_.addItem("daemon's default", 1);
    if (chosen.empty()) selected = 1;
  }
  for (const auto& m : models) {
    menuModels_.push_back(m.name);
    const int id = static_cast<int>(menuModels_.size());
    model_.addItem(
        juce::String(m.name) + " (" + juce::String(m.family) + ", " + juce::String(m.defaultSteps) + " steps)", id);
    if (m.name == chosen || (chosen.empty() && id == 1)) selected = id;  // none chosen: the daemon's first
  }
  if (selected == 0) {
    // Saved with the project but not (or not yet known to be) served here: shown as such; a render
    // on a model the daemon does not serve says so in the status line.
    menuModels_.push_back(chosen);
    model_.addItem(juce::String(chosen) + (models.empty() ? "" : " (not served by this daemon)"),
                   static_cast<int>(menuModels_.size()));
    selected = static_cast<int>(menuModels_.size());
  }
  model_.setSelectedId(selected, juce::dontSendNotification);
}

void Sa3AudioProcessorEditor::refreshLoraMenus() {
  auto& core = processor_.core();
  const auto adapters = core.loras();
  const std::string model = core.jobModel();  // "" : not known yet
  const auto fitsModel = [&](const sa3::LoraInfo& l) {
    return !l.adapterType.empty() && (model.empty() || std::find(l.fits.begin(), l.fits.end(), model) != l.fits.end());
  };
  for (int slot = 0; slot < sa3::kLoraSlots; ++slot) {
    auto& menu = loraMenus_[static_cast<size_t>(slot)];
    auto& names = menuLoras_[static_cast<size_t>(slot)];
    const std::string chosen = core.loraSlot(slot);
    menu.clear(juce::dontSendNotification);
    names.assign(1, "");
    menu.addItem("none", 1);
    int selected = chosen.empty() ? 1 : 0;
    const auto add = [&](const sa3::LoraInfo& l, const juce::String& text, bool enabled) {
      names.push_back(l.name);
      const int id = static_cast<int>(names.size());
      menu.addItem(text, id);
      menu.setItemEnabled(id, enabled);
      if (juce::String(l.name).equalsIgnoreCase(juce::String(chosen))) selected = id;
    };
    // Only the adapters that fit the job's model can be chosen; the others are listed as not fitting
    // (a project's choice among them stays selected, and Render says what to do).
    for (const auto& l : adapters)
      if (fitsModel(l))
        add(l, juce::String(l.name) + " (" + juce::String(l.adapterType) + ", rank " + juce::String(l.rank) + ")",
            true);
    bool heading = false;
    for (const auto& l : adapters) {
      if (fitsModel(l)) continue;
      if (!heading) menu.addSectionHeading(model.empty() ? "cannot be used" : "does not fit " + juce::String(model));
      heading = true;
      add(l, juce::String(l.name) + (l.adapterType.empty() ? " (cannot be read)" : " (does not fit)"), false);
    }
    if (selected == 0) {
      // Saved with the project but not in this daemon's folder (or not heard from it yet).
      names.push_back(chosen);
      menu.addItem(juce::String(chosen) + (core.daemonVersion().empty() ? "" : " (not in the daemon's LoRA folder)"),
                   static_cast<int>(names.size()));
      selected = static_cast<int>(names.size());
    }
    menu.setSelectedId(selected, juce::dontSendNotification);
  }
}

void Sa3AudioProcessorEditor::timerCallback() {
  auto& core = processor_.core();
  juce::String text = core.statusText();
  if (core.status() == sa3::Status::Rendering) text << "  " << juce::roundToInt(core.progress() * 100.0f) << "%";
  status_.setText(text, juce::dontSendNotification);
  // A project (state) loaded while the editor is open brings its own endpoint.
  if (!endpoint_.hasKeyboardFocus(true) && endpoint_.getText() != juce::String(core.endpoint()))
    endpoint_.setText(core.endpoint(), juce::dontSendNotification);
  if (!negativePrompt_.hasKeyboardFocus(true) && negativePrompt_.getText() != juce::String(core.negativePrompt()))
    negativePrompt_.setText(core.negativePrompt(), juce::dontSendNotification);
  if (core.modelsSerial() != shownModelsSerial_) {
    shownModelsSerial_ = core.modelsSerial();
    refreshModelMenu();
  }
  // Which adapters fit depends on the chosen model too.
  if (core.lorasSerial() != shownLorasSerial_ || core.modelsSerial() != lorasShownForModels_) {
    shownLorasSerial_ = core.lorasSerial();
    lorasShownForModels_ = core.modelsSerial();
    refreshLoraMenus();
  }
  initNoiseLevel_.setEnabled(core.mode() == sa3::Mode::Transform);  // the other modes send no noise level
  const int modelSteps = core.modelDefaultSteps();
  if (modelSteps != shownModelSteps_) {
    shownModelSteps_ = modelSteps;
    modelSteps_.setText(modelSteps > 0 ? "model default: " + juce::String(modelSteps) : "model default: not known",
                        juce::dontSendNotification);
  }
  const size_t count = core.numTakes();
  if (count != shownTakes_) {
    shownTakes_ = count;
    takes_.clear(juce::dontSendNotification);
    takes_.addItem("dry (no take)", 1);
    for (size_t i = 0; i < count; ++i) {
      const auto info = core.takeInfo(i);
      juce::String adapters;
      for (const auto& l : info.loras) adapters << ", " << juce::String(l.name) << " " << juce::String(l.strength, 2);
      takes_.addItem("take " + juce::String(static_cast<juce::int64>(info.id)) + ": " + juce::String(info.prompt) +
                         " (" + juce::String(sa3::modeName(info.mode)) + ", seed " +
                         juce::String(static_cast<juce::int64>(info.seed)) +
                         (info.model.empty() ? juce::String() : ", " + juce::String(info.model)) + adapters +
                         (info.exactLength ? ", exact length" : "") + ")",
                     static_cast<int>(i) + 2);
    }
  }
  takes_.setSelectedId(core.activeTake() + 2, juce::dontSendNotification);
}
