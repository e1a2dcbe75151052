// Weight QAT through the linear layers' kernel slot (see weight_qat.h).
#include "outq/qat/weight_qat.h"

#include "outq/core/error.h"
#include "outq/qat/lsq.h"
#include "outq/quant/quantizer.h"

namespace outq {

struct WeightQat::State {
  QatConfig config;
  QuantSpec spec;  ///< symmetric, per channel or group; range = the initial estimator
  bool quantizing = true;
  struct Entry {
    std::string module;
    ObservedLinearImpl* linear = nullptr;
    torch::Tensor step;  ///< (rows, groups, 1), over the grouped view (rows, groups, group_size)
    bool initialized = false;
  };
  std::vector<Entry> entries;

  void init(Entry& e) const {
    torch::NoGradGuard no_grad;
    const auto w = e.linear->weight.detach();
    OUTQ_CHECK(torch::isfinite(w).all().item<bool>(), e.module, ": weight QAT initialisation: non-finite weights");
    const auto [lo, hi] = observe_range(w, spec);
    e.step.copy_(qparams_from_range(lo, hi, spec).scale.reshape(e.step.sizes()));
    e.initialized = true;
  }
};

namespace {

class FakeQuantWeightKernel : public LinearKernel {
 public:
  FakeQuantWeightKernel(std::shared_ptr<WeightQat::State> state, size_t index) : state_(std::move(state)), index_(index) {}
  torch::Tensor forward(const torch::Tensor& x) const override {
    auto& e = state_->entries[index_];
    const auto& w = e.linear->weight;
    if (!state_->quantizing) return torch::matmul(x, w.t());
    if (!e.initialized) state_->init(e);
    const auto& spec = state_->spec;
    const double scale = state_->config.lsq_grad_scale
                             ? lsq_grad_scale(w.numel() / e.step.numel(), spec.qmax())
                             : 1.0;
    const auto wq = lsq_quant_symmetric(grouped_view(w, spec), e.step, spec.bits, scale).reshape(w.sizes());
    return torch::matmul(x, wq.t());
  }

 private:
  std::shared_ptr<WeightQat::State> state_;
  size_t index_;
};

}  // namespace

WeightQat::WeightQat(Llama& model, const QatConfig& config) : model_(model), state_(std::make_shared<State>()) {
  config.validate(/*warn=*/false);  // warnings were given when the config was read
  OUTQ_CHECK(config.quantizes_weights(), "weight QAT: expected qat.weight_bits in 2..8, found 0 (off)");
  state_->config = config;
  state_->spec = LearnedWeights{config.weight_bits, config.weight_group_size, {}}.spec();  // the grid it exports
  state_->spec.range = config.weight_init == "mse" ? RangeMethod::kMse : RangeMethod::kMinMax;
  for (const auto& module : model->linear_modules()) {
    ObservedLinear linear = model->linear(module);
    OUTQ_CHECK(!linear->kernel, module, ": weight QAT needs the float linear layer, found a kernel attached");
    const int64_t rows = linear->weight.size(0), cols = linear->weight.size(1);
    OUTQ_CHECK(config.weight_group_size == 0 || cols % config.weight_group_size == 0, "qat.weight_group_size: expected a "
               "divisor of every linear's input width; ", module, " has ", cols, ", found ", config.weight_group_size);
    const int64_t groups = config.weight_group_size > 0 ? cols / config.weight_group_size : 1;
    State::Entry e{module, linear.get(), torch::ones({rows, groups, 1}, linear->weight.options()).requires_grad_(true), false};
    state_->entries.push_back(e);
  }
  for (size_t i = 0; i < state_->entries.size(); ++i)
    state_->entries[i].linear->kernel = std::make_shared<FakeQuantWeightKernel>(state_, i);
}

WeightQat::~WeightQat() {
  for (auto& e : state_->entries) e.linear->kernel.reset();
}

std::vector<torch::Tensor> WeightQat::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& e : state_->entries) out.push_back(e.step);
  return out;
}

std::map<std::string, torch::Tensor> WeightQat::named_steps() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : state_->entries) out[e.module + ".weight_step"] = e.step.detach().reshape({e.step.size(0), e.step.size(1)});
  return out;
}

void WeightQat::load_steps(const std::map<std::string, torch::Tensor>& steps) {
  torch::NoGradGuard no_grad;
  for (auto& e : state_->entries) {
    const std::string name = e.module + ".weight_step";
    const auto it = steps.find(name);
    OUTQ_CHECK(it != steps.end(), "weight QAT: expected steps for ", name, ", found none");
    OUTQ_CHECK(it->second.numel() == e.step.numel(), "weight QAT: ", name, ": expected ", e.step.numel(), " steps, found ",
               it->second.numel());
    e.step.copy_(it->second.reshape(e.step.sizes()));
    e.initialized = true;
  }
}

void WeightQat::set_step(int64_t step) {
  const auto& c = state_->config;
  state_->quantizing = step >= c.start_step;
  if (step > c.start_step) return;
  for (auto& e : state_->entries) e.initialized = false;  // set from the weights at the first quantized step
}

bool WeightQat::quantizing() const { return state_->quantizing; }

int WeightQat::constrain() {
  torch::NoGradGuard no_grad;
  int changed = 0;
  for (auto& e : state_->entries) {
    const auto low = ~(e.step >= kMinStep);  // NaN included
    const int64_t n = low.sum().item<int64_t>();
    if (n == 0) continue;
    e.step.masked_fill_(low, kMinStep);
    changed += static_cast<int>(n);
  }
  return changed;
}

LearnedWeights WeightQat::learned() const {
  LearnedWeights out{state_->config.weight_bits, state_->config.weight_group_size, {}};
  for (const auto& e : state_->entries) out.steps[e.module] = e.step.detach().reshape({e.step.size(0), e.step.size(1)}).clone();
  return out;
}

}  // namespace outq
