// sa3shim: the plugin core driven from Python, so tests and benchmarks act as a host.
// One PYBIND11_MODULE; each part binds itself in its own init_* function.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "sa3/position.h"
#include "sa3/processor.h"
#include "sa3/protocol.h"
#include "sa3/timebase.h"

namespace py = pybind11;
namespace tb = sa3::timebase;

namespace {

const char* statusName(sa3::Status s) {
  switch (s) {
    case sa3::Status::Offline:
      return "offline";
    case sa3::Status::Idle:
      return "idle";
    case sa3::Status::Rendering:
      return "rendering";
    case sa3::Status::Error:
      return "error";
  }
  return "offline";
}

sa3::Mode parseMode(const std::string& name) {
  if (name == "generate") return sa3::Mode::Generate;
  if (name == "inpaint") return sa3::Mode::Inpaint;
  if (name == "continue") return sa3::Mode::Continue;
  if (name == "transform") return sa3::Mode::Transform;
  throw py::value_error("mode '" + name + "' is not one of generate, inpaint, continue, transform");
}

tb::Meter toMeter(std::pair<int, int> m) {
  tb::Meter meter{m.first, m.second};
  if (!meter.valid())
    throw py::value_error("meter " + std::to_string(m.first) + "/" + std::to_string(m.second) +
                          " is not a time signature; use 1-64 beats over 1, 2, 4, 8, 16 or 32");
  return meter;
}

/// A scale lock as Python sees it: None for the model's setting, else dB.
std::optional<double> scaleLockFromCore(double db) {
  if (db < 0.0) return std::nullopt;
  return db;
}

double scaleLockToCore(std::optional<double> db) {
  if (!db) return -1.0;
  if (!std::isfinite(*db) || *db < 0.0 || *db > sa3::kMaxScaleLockDb) {
    char text[128];
    std::snprintf(text, sizeof text, "scale lock %g dB is outside 0-%g; use None for the model's setting, 0 for off",
                  *db, sa3::kMaxScaleLockDb);
    throw py::value_error(text);
  }
  return *db;
}

/// Steps as Python sees them: None for the model's default (0 in the core), else 1 to kMaxSteps.
std::optional<int> optionalSteps(int steps) {
  if (steps <= 0) return std::nullopt;
  return steps;
}

int stepsToCore(std::optional<int> steps) {
  if (!steps) return 0;
  if (*steps < 1 || *steps > sa3::kMaxSteps)
    throw py::value_error("steps " + std::to_string(*steps) + " is outside 1-" + std::to_string(sa3::kMaxSteps) +
                          "; use None for the model's default");
  return *steps;
}

/// The init noise level as the plugin's control takes it: kMinInitNoiseLevel to 1.
double initNoiseLevelToCore(double level) {
  if (!(level >= sa3::kMinInitNoiseLevel && level <= 1.0)) {
    char text[128];
    std::snprintf(text, sizeof text,
                  "init noise level %g is outside %g-1; near 0 keeps the selection, 1 keeps its length", level,
                  sa3::kMinInitNoiseLevel);
    throw py::value_error(text);
  }
  return level;
}

/// Text that may be left out as Python sees it: None for "".
std::optional<std::string> optionalText(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return text;
}

py::dict modelDict(const sa3::ModelInfo& m) {
  py::dict d;
  d["name"] = m.name;
  d["family"] = m.family;
  d["default_steps"] = m.defaultSteps;
  d["default_cfg"] = m.defaultCfg;
  d["max_seconds"] = m.maxSeconds;
  d["steering"] = m.steering;
  return d;
}

py::dict loraDict(const sa3::LoraInfo& l) {
  py::dict d;
  d["name"] = l.name;
  d["file"] = l.file;
  d["rank"] = l.rank > 0 ? std::optional<int>(l.rank) : std::nullopt;  // None: a file sa3 cannot read
  d["adapter_type"] = optionalText(l.adapterType);
  d["fits"] = l.fits;
  return d;
}

/// A job's or take's adapters as Python sees them: [(name, strength)] in the order they apply.
py::list loraList(const std::vector<sa3::LoraUse>& loras) {
  py::list out;
  for (const auto& l : loras) out.append(py::make_tuple(l.name, l.strength));
  return out;
}

double loraStrengthToCore(double strength) {
  if (!(std::isfinite(strength) && std::fabs(strength) <= sa3::kMaxLoraStrength)) {
    char text[128];
    std::snprintf(text, sizeof text, "LoRA strength %g is outside -%g to %g (1 = as trained, 0 = left out)", strength,
                  sa3::kMaxLoraStrength, sa3::kMaxLoraStrength);
    throw py::value_error(text);
  }
  return strength;
}

int loraSlotIndex(int slot) {
  if (slot < 0 || slot >= sa3::kLoraSlots)
    throw py::index_error("LoRA slot " + std::to_string(slot) + " is outside 0-" + std::to_string(sa3::kLoraSlots - 1));
  return slot;
}

/// One slot as Python sets it: None (empty), a name (strength 1) or (name or None, strength).
std::pair<std::string, double> slotFromPython(const py::handle& entry) {
  if (entry.is_none()) return {"", sa3::kDefaultLoraStrength};
  if (py::isinstance<py::str>(entry)) return {entry.cast<std::string>(), sa3::kDefaultLoraStrength};
  const auto pair = entry.cast<std::pair<std::optional<std::string>, double>>();
  return {pair.first.value_or(""), loraStrengthToCore(pair.second)};
}

/// The processor plus what a Python host needs around it (block timing).
struct PyProcessor {
  explicit PyProcessor(const sa3::ProcessorConfig& config) : core(config) {}
  sa3::Processor core;
  double lastBlockSeconds = 0.0;
};

void init_timebase(py::module_& m) {
  m.attr("MODEL_SAMPLE_RATE") = tb::kModelSampleRate;
  m.attr("SAMPLES_PER_FRAME") = tb::kSamplesPerFrame;
  m.attr("PROTOCOL_VERSION") = SA3_PROTOCOL_VERSION;
  m.attr("MAX_SCALE_LOCK_DB") = sa3::kMaxScaleLockDb;
  m.attr("MAX_STEPS") = sa3::kMaxSteps;
  m.attr("TAKE_CEILING_DB") = sa3::kTakeCeilingDb;
  m.attr("DEFAULT_INIT_NOISE_LEVEL") = sa3::kDefaultInitNoiseLevel;
  m.attr("MIN_INIT_NOISE_LEVEL") = sa3::kMinInitNoiseLevel;
  m.attr("LORA_SLOTS") = sa3::kLoraSlots;
  m.attr("MAX_LORAS") = sa3::kMaxLoras;
  m.attr("MAX_LORA_STRENGTH") = sa3::kMaxLoraStrength;
  m.attr("DEFAULT_LORA_STRENGTH") = sa3::kDefaultLoraStrength;
  m.def("quarters_per_bar", [](std::pair<int, int> meter) { return toMeter(meter).quartersPerBar(); });
  m.def(
      "bars_to_samples",
      [](double bars, double bpm, std::pair<int, int> meter, double rate) {
        return tb::barsToSamples(bars, bpm, toMeter(meter), rate);
      },
      py::arg("bars"), py::arg("bpm"), py::arg("meter"), py::arg("sample_rate"));
  m.def(
      "bar_start_sample",
      [](double bar, double bpm, std::pair<int, int> meter, double rate) {
        return tb::barStartSample(bar, bpm, toMeter(meter), rate);
      },
      py::arg("bar"), py::arg("bpm"), py::arg("meter"), py::arg("sample_rate"), "1-based bar number to host sample");
  m.def("ppq_to_samples", &tb::ppqToSamples, py::arg("ppq"), py::arg("bpm"), py::arg("sample_rate"));
  m.def(
      "bar_line_at_or_before",
      [](int64_t sample, double bpm, std::pair<int, int> meter, double rate) {
        return tb::barLineAtOrBefore(sample, bpm, toMeter(meter), rate);
      },
      py::arg("sample"), py::arg("bpm"), py::arg("meter"), py::arg("sample_rate"),
      "host sample of the last bar line at or before `sample` (where context windows start)");
  m.def("samples_to_frames", &tb::samplesToFrames, py::arg("model_samples"));
  m.def("host_to_model_samples", &tb::hostToModelSamples, py::arg("host_samples"), py::arg("host_sample_rate"));
  m.def(
      "nearest_bar_line", [](double ppq, std::pair<int, int> meter) { return tb::nearestBarLine(ppq, toMeter(meter)); },
      py::arg("ppq"), py::arg("meter"));
  m.def(
      "inpaint_frame_mask",
      [](int64_t window, int64_t start, int64_t end) {
        const auto mask = tb::inpaintFrameMask(window, start, end);
        return py::array_t<uint8_t>(static_cast<py::ssize_t>(mask.size()), mask.data());  // copies
      },
      py::arg("window_model_samples"), py::arg("region_start"), py::arg("region_end"),
      "Frame mask (1 = keep, 0 = regenerate) over ceil(window / 4096) latent frames.");
}

void init_processor(py::module_& m) {
  py::class_<PyProcessor>(m, "Processor", "The sa3 plugin core (see plugin_shim/include/sa3/processor.h).")
      .def(py::init([](const std::string& endpoint, double maxCaptureSeconds, double contextSeconds, int heartbeatMs,
                       int offlineAfterMs, int requestTimeoutMs) {
             sa3::ProcessorConfig c;
             c.endpoint = endpoint;
             c.maxCaptureSeconds = maxCaptureSeconds;
             c.contextSeconds = contextSeconds;
             c.heartbeatMs = heartbeatMs;
             c.offlineAfterMs = offlineAfterMs;
             c.requestTimeoutMs = requestTimeoutMs;
             return std::make_unique<PyProcessor>(c);
           }),
           py::arg("endpoint") = "tcp://127.0.0.1:5557", py::arg("max_capture_seconds") = tb::kMaxSeconds,
           py::arg("context_seconds") = 10.0, py::arg("heartbeat_ms") = 500, py::arg("offline_after_ms") = 2000,
           py::arg("request_timeout_ms") = 120000)
      .def(
          "prepare_to_play", [](PyProcessor& p, double rate, int maxBlock) { p.core.prepareToPlay(rate, maxBlock); },
          py::arg("sample_rate"), py::arg("max_block_size"))
      .def("release_resources", [](PyProcessor& p) { p.core.releaseResources(); })
      .def("reset", [](PyProcessor& p) { p.core.reset(); })
      .def(
          "process_block",
          [](PyProcessor& p, py::array_t<float, py::array::c_style> buffer, std::optional<double> bpm,
             std::optional<std::pair<int, int>> timeSignature, std::optional<double> ppqPosition,
             std::optional<double> ppqLastBarStart, std::optional<int64_t> timeInSamples, std::optional<bool> isPlaying,
             std::optional<bool> isLooping, std::optional<std::pair<double, double>> loopPoints) {
            if (buffer.ndim() != 2 || buffer.shape(0) < 1 || buffer.shape(0) > 16)
              throw py::value_error("buffer must be float32 (channels, samples) with 1 to 16 channels");
            sa3::PositionInfo pos;
            pos.bpm = bpm;
            if (timeSignature) {
              pos.timeSigNumerator = timeSignature->first;
              pos.timeSigDenominator = timeSignature->second;
            }
            pos.ppqPosition = ppqPosition;
            pos.ppqPositionOfLastBarStart = ppqLastBarStart;
            pos.timeInSamples = timeInSamples;
            pos.isPlaying = isPlaying;
            pos.isLooping = isLooping;
            if (loopPoints) {
              pos.loopStartPpq = loopPoints->first;
              pos.loopEndPpq = loopPoints->second;
            }
            const int channels = static_cast<int>(buffer.shape(0));
            const int samples = static_cast<int>(buffer.shape(1));
            float* data = buffer.mutable_data();
            float* pointers[16];
            for (int c = 0; c < channels; ++c) pointers[c] = data + static_cast<py::ssize_t>(c) * samples;
            const auto t0 = std::chrono::steady_clock::now();
            p.core.processBlock(pointers, channels, samples, pos);
            p.lastBlockSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          },
          py::arg("buffer"), py::kw_only(), py::arg("bpm") = py::none(), py::arg("time_signature") = py::none(),
          py::arg("ppq_position") = py::none(), py::arg("ppq_last_bar_start") = py::none(),
          py::arg("time_in_samples") = py::none(), py::arg("is_playing") = py::none(),
          py::arg("is_looping") = py::none(), py::arg("loop_points") = py::none(),
          "Process a float32 (channels, samples) block in place; position fields as JUCE's PositionInfo.")
      .def_property_readonly("last_block_seconds", [](const PyProcessor& p) { return p.lastBlockSeconds; })
      .def_property(
          "mode", [](const PyProcessor& p) { return std::string(sa3::modeName(p.core.mode())); },
          [](PyProcessor& p, const std::string& m) { p.core.setMode(parseMode(m)); })
      .def_property(
          "bpm", [](const PyProcessor& p) { return p.core.bpm(); },
          [](PyProcessor& p, double bpm) {
            if (!tb::validBpm(bpm)) throw py::value_error("tempo " + std::to_string(bpm) + " bpm is outside 20-999");
            p.core.setBpm(bpm);
          })
      .def_property(
          "meter",
          [](const PyProcessor& p) { return std::make_pair(p.core.meter().numerator, p.core.meter().denominator); },
          [](PyProcessor& p, std::pair<int, int> m) {
            const auto meter = toMeter(m);
            p.core.setMeter(meter.numerator, meter.denominator);
          })
      .def_property(
          "region_bars",
          [](const PyProcessor& p) { return std::make_pair(p.core.regionStartBar(), p.core.regionEndBar()); },
          [](PyProcessor& p, std::pair<double, double> r) { p.core.setRegionBars(r.first, r.second); })
      .def_property(
          "bars", [](const PyProcessor& p) { return p.core.bars(); },
          [](PyProcessor& p, double b) { p.core.setBars(b); })
      .def_property(
          "seed", [](const PyProcessor& p) { return p.core.seed(); },
          [](PyProcessor& p, uint64_t s) { p.core.setSeed(s); })
      .def_property(
          "steps", [](const PyProcessor& p) { return optionalSteps(p.core.steps()); },
          [](PyProcessor& p, std::optional<int> steps) { p.core.setSteps(stepsToCore(steps)); },
          "Sampler steps, 1 to MAX_STEPS; None = the model's default (the request leaves it out).")
      .def_property_readonly(
          "model_default_steps", [](const PyProcessor& p) { return optionalSteps(p.core.modelDefaultSteps()); },
          "Default steps of the model the next render runs on (the chosen one, else the daemon's default), from "
          "the daemon's `capabilities` reply; None until it answered, or for a model it does not serve.")
      .def_property(
          "scale_lock_db", [](const PyProcessor& p) { return scaleLockFromCore(p.core.scaleLockDb()); },
          [](PyProcessor& p, std::optional<double> db) { p.core.setScaleLockDb(scaleLockToCore(db)); },
          "dB per sampler step by which notes outside a key the prompt names are turned down "
          "(0 = off, up to MAX_SCALE_LOCK_DB); None = the model's setting (the request leaves it out).")
      .def_property(
          "prompt", [](const PyProcessor& p) { return p.core.prompt(); },
          [](PyProcessor& p, const std::string& s) { p.core.setPrompt(s); })
      .def_property(
          "endpoint", [](const PyProcessor& p) { return p.core.endpoint(); },
          [](PyProcessor& p, const std::string& e) { p.core.setEndpoint(e); })
      .def_property(
          "negative_prompt", [](const PyProcessor& p) { return p.core.negativePrompt(); },
          [](PyProcessor& p, const std::string& s) { p.core.setNegativePrompt(s); },
          "What guidance steers away from; sent with every job when not empty (protocol 1.4).")
      .def_property(
          "init_noise_level", [](const PyProcessor& p) { return p.core.initNoiseLevel(); },
          [](PyProcessor& p, double level) { p.core.setInitNoiseLevel(initNoiseLevelToCore(level)); },
          "Transform's init noise level, MIN_INIT_NOISE_LEVEL to 1 (default DEFAULT_INIT_NOISE_LEVEL).")
      .def_property(
          "exact_length", [](const PyProcessor& p) { return p.core.exactLength(); },
          [](PyProcessor& p, bool on) { p.core.setExactLength(on); },
          "Exact length (protocol 1.6, any mode; default False): the released models make exactly the region's "
          "length instead of padding with 6 s of headroom (faster for short takes; the same seed gives another "
          "take). Sent only when True; a daemon before 1.6, or a model whose steering lacks exact_length, stops "
          "the render with a status line.")
      .def_property(
          "model", [](const PyProcessor& p) { return optionalText(p.core.model()); },
          [](PyProcessor& p, std::optional<std::string> name) { p.core.setModel(name.value_or("")); },
          "The model jobs run on, by the name in `models`; None (or \"\") = the daemon's default, its first.")
      .def_property_readonly(
          "models",
          [](const PyProcessor& p) {
            py::list out;
            for (const auto& m : p.core.models()) out.append(modelDict(m));
            return out;
          },
          "The models the daemon serves, the default first, from its `capabilities` reply: dicts with name, "
          "family, default_steps, default_cfg, max_seconds, steering. [] until it answers (and before 1.4).")
      .def_property_readonly(
          "loras",
          [](const PyProcessor& p) {
            py::list out;
            for (const auto& l : p.core.loras()) out.append(loraDict(l));
            return out;
          },
          "The adapters in the daemon's LoRA folder, from its `capabilities` reply (protocol 1.5): dicts with "
          "name, file, rank, adapter_type (None for a file the daemon cannot read) and fits (the served models "
          "each adapts). [] until it answers (and before 1.5).")
      .def_property_readonly(
          "max_loras", [](const PyProcessor& p) { return optionalSteps(p.core.maxLoras()); },
          "Adapters one job may name, from the daemon's `capabilities`; None until it answers (and before 1.5).")
      .def_property_readonly(
          "job_model", [](const PyProcessor& p) { return optionalText(p.core.jobModel()); },
          "The model the next job runs on: the chosen one, else the daemon's first; None while neither is known.")
      .def_property(
          "lora_slots",
          [](const PyProcessor& p) {
            py::list out;
            for (int slot = 0; slot < sa3::kLoraSlots; ++slot)
              out.append(py::make_tuple(optionalText(p.core.loraSlot(slot)), p.core.loraStrength(slot)));
            return out;
          },
          [](PyProcessor& p, const py::sequence& entries) {
            if (py::isinstance<py::str>(entries) || entries.size() > static_cast<size_t>(sa3::kLoraSlots))
              throw py::value_error("lora_slots takes a list of at most " + std::to_string(sa3::kLoraSlots) +
                                    " entries: None, a name, or (name, strength)");
            std::vector<std::pair<std::string, double>> slots;
            for (const auto& entry : entries) slots.push_back(slotFromPython(entry));  // all checked first
            slots.resize(sa3::kLoraSlots, {"", sa3::kDefaultLoraStrength});
            for (int slot = 0; slot < sa3::kLoraSlots; ++slot) {
              p.core.setLoraSlot(slot, slots[static_cast<size_t>(slot)].first);
              p.core.setLoraStrength(slot, slots[static_cast<size_t>(slot)].second);
            }
          },
          "The LORA_SLOTS slots, in the order they apply: (name or None, strength). Set a list of at most "
          "LORA_SLOTS entries (None, a name at strength 1, or (name, strength) with strength within "
          "+-MAX_LORA_STRENGTH); the slots after it are emptied at strength 1. A slot at strength 0 is not sent.")
      .def(
          "set_lora_slot",
          [](PyProcessor& p, int slot, std::optional<std::string> name, double strength) {
            loraSlotIndex(slot);
            p.core.setLoraStrength(slot, loraStrengthToCore(strength));
            p.core.setLoraSlot(slot, name.value_or(""));
          },
          py::arg("slot"), py::arg("name"), py::arg("strength") = sa3::kDefaultLoraStrength,
          "One slot (0-based): an adapter by the name `loras` lists (None = none) and its strength.")
      .def(
          "set_lora_strength",
          [](PyProcessor& p, int slot, double strength) {
            loraSlotIndex(slot);
            p.core.setLoraStrength(slot, loraStrengthToCore(strength));
          },
          py::arg("slot"), py::arg("strength"), "A slot's strength alone, as its automatable parameter sets it.")
      .def_property_readonly(
          "daemon_version", [](const PyProcessor& p) { return optionalText(p.core.daemonVersion()); },
          "The daemon's protocol version from its `capabilities` reply; None until it answers.")
      .def("request_render", [](PyProcessor& p) { p.core.requestRender(); })
      .def("cancel_render", [](PyProcessor& p) { p.core.cancelRender(); })
      .def("resolve_region",
           [](const PyProcessor& p) {
             const auto r = p.core.resolveRegion();
             py::dict d;
             d["start"] = r.region.start;
             d["end"] = r.region.end;
             d["bpm"] = r.bpm;
             d["meter"] = std::make_pair(r.meter.numerator, r.meter.denominator);
             d["from_host_loop"] = r.fromHostLoop;
             return d;
           })
      .def_property_readonly("status", [](const PyProcessor& p) { return std::string(statusName(p.core.status())); })
      .def_property_readonly("status_text", [](const PyProcessor& p) { return p.core.statusText(); })
      .def_property_readonly("online", [](const PyProcessor& p) { return p.core.online(); })
      .def_property_readonly("progress", [](const PyProcessor& p) { return p.core.progress(); })
      .def_property_readonly("renders_completed", [](const PyProcessor& p) { return p.core.rendersCompleted(); })
      .def_property_readonly("sample_rate", [](const PyProcessor& p) { return p.core.sampleRate(); })
      .def_property_readonly("timeline_position", [](const PyProcessor& p) { return p.core.timelinePosition(); })
      .def_property_readonly("takes",
                             [](const PyProcessor& p) {
                               py::list out;
                               for (size_t i = 0; i < p.core.numTakes(); ++i) {
                                 const auto t = p.core.takeInfo(i);
                                 py::dict d;
                                 d["id"] = t.id;
                                 d["prompt"] = t.prompt;
                                 d["seed"] = t.seed;
                                 d["steps"] = t.steps;
                                 d["scale_lock_db"] = scaleLockFromCore(t.scaleLockDb);
                                 d["mode"] = std::string(sa3::modeName(t.mode));
                                 d["model"] = optionalText(t.model);
                                 d["negative_prompt"] = t.negativePrompt;
                                 d["init_noise_level"] = t.mode == sa3::Mode::Transform
                                                             ? std::optional<double>(t.initNoiseLevel)
                                                             : std::nullopt;
                                 d["loras"] = loraList(t.loras);
                                 d["exact_length"] = t.exactLength;
                                 d["sample_rate"] = t.sampleRate;
                                 d["start"] = t.start;
                                 d["length"] = t.length;
                                 d["bpm"] = t.bpm;
                                 d["meter"] = std::make_pair(t.meter.numerator, t.meter.denominator);
                                 out.append(d);
                               }
                               return out;
                             })
      .def(
          "take_audio",
          [](const PyProcessor& p, size_t index) {
            if (index >= p.core.numTakes()) throw py::index_error("no take " + std::to_string(index));
            const auto left = p.core.takeAudio(index, 0);
            const auto right = p.core.takeAudio(index, 1);
            py::array_t<float> out({static_cast<py::ssize_t>(2), static_cast<py::ssize_t>(left.size())});
            std::copy(left.begin(), left.end(), out.mutable_data(0, 0));
            std::copy(right.begin(), right.end(), out.mutable_data(1, 0));
            return out;
          },
          py::arg("index"), "A take's audio, float32 (2, samples) at its sample rate.")
      .def(
          "select_take", [](PyProcessor& p, int index) { p.core.selectTake(index); }, py::arg("index"))
      .def_property_readonly("active_take", [](const PyProcessor& p) { return p.core.activeTake(); })
      .def(
          "delete_take", [](PyProcessor& p, size_t index) { p.core.deleteTake(index); }, py::arg("index"))
      .def("get_state",
           [](const PyProcessor& p) {
             const auto bytes = p.core.getStateInformation();
             return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
           })
      .def(
          "set_state",
          [](PyProcessor& p, const py::bytes& state) {
            const std::string s = state;
            return p.core.setStateInformation(s.data(), s.size());
          },
          py::arg("state"), "Restore get_state() bytes; False (and nothing changed) when they are not valid.");
}

}  // namespace

PYBIND11_MODULE(sa3shim, m) {
  m.doc() = "sa3 plugin core (C++17) for Python hosts and tests";
  init_timebase(m);
  init_processor(m);
}
