// The pretraining loop (see trainer.h for the run directory and behaviour).
#include "outq/train/trainer.h"

#include <fmt/format.h>

#include <atomic>
#include <limits>
#include <optional>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "outq/analysis/analyze.h"
#include "outq/core/config.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/log.h"
#include "outq/core/plot.h"
#include "outq/core/process.h"
#include "outq/core/table.h"
#include "outq/data/prepare.h"
#include "outq/data/sampler.h"
#include "outq/data/tokenizer.h"
#include "outq/eval/perplexity.h"
#include "outq/model/checkpoint.h"
#include "outq/qat/qat_observer.h"
#include "outq/qat/weight_qat.h"
#include "outq/train/gradient_reducer.h"
#include "outq/train/process_group.h"
#include "data_parallel.h"
#include "train_checkpoint.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGINT/SIGTERM handlers that only set a flag; restores the old ones on exit.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// The settings a resumed run must share with the run it continues.
struct ResumeKey {
  ModelConfig model;
  TrainConfig train;
  QatConfig qat;
  template <class F>
  void visit_sections(F&& f) {
    f(model);
    f(train);
    f(qat);
  }
};

nlohmann::json resume_key(const ModelConfig& model, const TrainConfig& train, const QatConfig& qat,
                          const std::string& tokenizer) {
  ResumeKey key{model, train, qat};
  auto j = nlohmann::json::parse(config_json(config_entries(key)));
  for (const char* k : {"run_dir", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"}) j["train"].erase(k);
  for (const char* k : TrainConfig::kCommunicationKeys) j["train"].erase(k);
  j["tokenizer_checksum"] = tokenizer;
  return j;
}

// A key missing from an older checkpoint matches when this run uses the key's default.
void check_same_run(const nlohmann::json& saved, const nlohmann::json& now, const nlohmann::json& defaults,
                    const std::string& where) {
  for (const auto& [section, fields] : now.items()) {
    if (!fields.is_object()) {
      if (saved.value(section, nlohmann::json()) != fields)
        fail_mismatch(where, section, fields.dump(), saved.value(section, nlohmann::json()).dump() + " (resume needs the same data)");
      continue;
    }
    for (const auto& [k, v] : fields.items()) {
      const auto old = saved.contains(section) ? saved[section].value(k, nlohmann::json()) : nlohmann::json();
      if (old.is_null() && defaults[section].value(k, nlohmann::json()) == v) continue;
      if (old != v) {
        fail_mismatch(where, section + "." + k, v.dump() + " (this run's setting)",
                      old.dump() + " (the checkpoint's); resume needs the same settings");
      }
    }
  }
}

// metrics.jsonl: appended line by line; on resume, records after the checkpoint are dropped.
class MetricsLog {
 public:
  MetricsLog(const fs::path& path, int64_t keep_up_to_step) : path_(path) {
    std::string kept;
    if (keep_up_to_step >= 0 && fs::exists(path)) {
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);) {
        try {
          auto j = nlohmann::json::parse(line);
          if (j.value("step", int64_t{0}) <= keep_up_to_step) kept += line + "\n";
        } catch (const nlohmann::json::exception&) {
          // a line cut short by a kill: dropped
        }
      }
    }
    write_file_atomic(path, kept);
    out_.open(path, std::ios::app);
    OUTQ_CHECK(out_.good(), path.string(), ": cannot open for appending");
  }
  void write(const nlohmann::json& record) {
    out_ << record.dump() << "\n";
    out_.flush();
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

// curve.png: training and validation perplexity against step, from metrics.jsonl.
void plot_curve(const fs::path& run_dir) {
  PlotSeries train{"train (interval mean)", {}, {}}, val{"validation", {}, {}};
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    const double step = j.at("step").get<double>();
    if (j.at("type") == "train") {
      train.x.push_back(step);
      train.y.push_back(std::exp(j.at("loss_avg").get<double>()));
    } else if (j.at("type") == "eval") {
      val.x.push_back(step);
      val.y.push_back(j.at("val_ppl").get<double>());
    }
  }
  LinePlot plot;
  plot.title = "outq train: perplexity by step";
  plot.xlabel = "step";
  plot.ylabel = "perplexity (log scale)";
  plot.log_y = true;
  plot.series = {train, val};
  plot_lines(plot, (run_dir / "curve.png").string());
}

// Fine-tuning: copies a trained model's weights into `model` after checking that it has this
// run's shapes and vocabulary. Returns the tokens it was trained on (its metadata; 0 if unknown).
int64_t init_from_model(Llama& model, const std::string& dir, const std::string& tokenizer_checksum) {
  const std::string where = "--init-from " + dir;
  const ModelConfig base = model_config_read(dir);
  const nlohmann::json want = model->config().to_hf_json(), have = base.to_hf_json();
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                          "vocab_size", "tie_word_embeddings", "norm_placement", "outq_rotated_by"}) {
    if (want.value(key, nlohmann::json()) != have.value(key, nlohmann::json())) {
      fail_mismatch(where, std::string("config ") + key, want.value(key, nlohmann::json()).dump() + " (this run's model)",
                    have.value(key, nlohmann::json()).dump());
    }
  }
  const fs::path tokenizer = tokenizer_path(dir);
  OUTQ_CHECK(fs::exists(tokenizer), where, ": expected the model's tokenizer.model or tokenizer.json, found none");
  OUTQ_CHECK(Tokenizer::load(tokenizer.string()).checksum() == tokenizer_checksum, where,
             ": expected the tokenizer of this run's data (the same vocabulary), found another tokenizer.model");
  const SafetensorsFile weights((fs::path(dir) / "model.safetensors").string());
  model_load_weights(model, weights);
  const auto recorded = weights.metadata_int("tokens", 0, std::numeric_limits<int64_t>::max());
  if (!recorded) log_warn("{}: the model does not record its training tokens (an older outq); counting them as 0", where);
  const int64_t tokens = recorded.value_or(0);
  log_info("fine-tuning from {} ({} training tokens)", dir, format_count(tokens));
  return tokens;
}

}  // namespace

TrainResult train_run(const TrainOptions& opt) {
  const TrainConfig& tc = opt.train;
  OUTQ_CHECK(tc.seq_len <= opt.model.max_position_embeddings, "train.seq_len: expected at most model.max_position_embeddings = ",
             opt.model.max_position_embeddings, ", found ", tc.seq_len);
  torch::set_num_threads(tc.threads);
  const torch::Device device(tc.device);
  OUTQ_CHECK(!device.is_cuda() || torch::cuda::is_available(), "train.device: expected a CUDA device visible to LibTorch, "
             "found none (this LibTorch has no CUDA support or no GPU is present); use train.device=\"cpu\"");

  // Data-parallel ranks (RANK / WORLD_SIZE from `outq train --nproc N` or another launcher):
  // train.batch_size is the global batch; rank r takes windows [r B/N, (r+1) B/N) of each one.
  const RankInfo rank_info = rank_info_from_environment();
  std::unique_ptr<ProcessGroup> group;
  if (rank_info.distributed()) {
    OUTQ_CHECK(tc.batch_size % rank_info.world_size == 0, "train.batch_size: expected a multiple of the number of ranks (",
               rank_info.world_size, "): it is the global batch, split evenly over the ranks; found ", tc.batch_size);
    log_set_rank(rank_info.rank);
    group = ProcessGroup::connect(rank_info, std::chrono::seconds(tc.dist_timeout_s), device);
    log_info("rank {} of {} joined the group at {}:{}", rank_info.rank, rank_info.world_size, rank_info.master_addr,
             rank_info.master_port);
  }
  const int world = rank_info.world_size, rank = rank_info.rank;
  const bool lead = rank == 0;  // writes checkpoints, metrics and the model
  const int local_batch = tc.batch_size / world;
  const DataSummary data_summary = train_detail::prepare_data_once(opt.data, opt.config_json, group.get());
  PreparedData data(data_summary.dir);
  const std::string data_tokenizer = tokenizer_path(data_summary.dir);
  // (An imported checkpoint may have more embedding rows than its tokenizer has pieces.)
  const bool padded = !opt.model.imported_from.empty() && opt.model.vocab_size > data.tokenizer().vocab_size();
  OUTQ_CHECK(opt.model.vocab_size == data.tokenizer().vocab_size() || padded, "model.vocab_size: expected the tokenizer's "
             "vocabulary size ", data.tokenizer().vocab_size(), " (", data_tokenizer, "), found ", opt.model.vocab_size);
  const TokenShard train_shard = data.shard("train");
  const TokenShard val_shard = data.shard("val");

  Llama model(opt.model);
  model->reset_parameters(static_cast<uint64_t>(tc.seed));
  const int64_t base_tokens = opt.init_from.empty() ? 0 : init_from_model(model, opt.init_from, data.tokenizer().checksum());
  model->to(device);
  torch::manual_seed(static_cast<uint64_t>(tc.seed));

  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model->named_parameters()) {
    const bool matrix = p.value().dim() == 2 && p.key().find("embed_tokens") == std::string::npos;
    (matrix || tc.decay_embeddings_and_norms ? decay : no_decay).push_back(p.value());
  }
  auto adamw = torch::optim::AdamWOptions(tc.lr).betas({tc.beta1, tc.beta2}).eps(tc.adam_eps).weight_decay(tc.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(adamw).weight_decay(0)));
  torch::optim::AdamW optimizer(groups, adamw);
  std::vector<torch::Tensor> params;
  for (const auto& p : model->parameters()) params.push_back(p);

  // Training windows are BOS + (seq_len) text tokens: inputs [:, :seq_len], targets [:, 1:].
  WindowSampler sampler(train_shard.size(), tc.seq_len - 1, static_cast<uint64_t>(tc.seed));
  const nlohmann::json key = resume_key(opt.model, tc, opt.qat, data.tokenizer().checksum());

  // QAT: the observer on the model, and the clip values' own optimizer (Adam without momentum,
  // beta1 = 0, and without weight decay).
  std::shared_ptr<QatObserver> qat;
  std::unique_ptr<WeightQat> weight_qat;
  std::unique_ptr<torch::optim::AdamW> clip_optimizer;
  std::vector<double> range_lr_scales;  // per parameter group of clip_optimizer
  if (opt.qat.quantizes_weights()) weight_qat = std::make_unique<WeightQat>(model, opt.qat);
  if (opt.qat.mode != "float") {
    OUTQ_CHECK(!opt.qat.quantizes() || opt.qat.start_step < tc.steps, "qat.start_step: expected less than train.steps (",
               tc.steps, "), found ", opt.qat.start_step);
    qat = std::make_shared<QatObserver>(model, opt.qat);
    if (group) {
      qat->set_data_parallel(world, [&group](const torch::Tensor& x) { return group->all_gather_rows(x, "the QAT range initialisation"); });
    }
    if (opt.qat.clamps() && !opt.qat.clamp_clips.empty()) {
      qat->load_clips_json(json_read_object(opt.qat.clamp_clips, "clamp ranges (qat.clamp_clips)"), opt.qat.clamp_clips);
    }
    model->observers().attach(qat);
  }
  {
    std::vector<torch::optim::OptimizerParamGroup> range_groups;
    auto add_group = [&](std::vector<torch::Tensor> tensors, double scale) {
      auto o = torch::optim::AdamWOptions(tc.lr * scale).betas({0.0, tc.beta2}).weight_decay(0);
      range_groups.emplace_back(std::move(tensors), std::make_unique<torch::optim::AdamWOptions>(o));
      range_lr_scales.push_back(scale);
    };
    if (opt.qat.quantizes()) add_group(qat->parameters(), opt.qat.clip_lr_scale);
    if (weight_qat) add_group(weight_qat->parameters(), opt.qat.weight_lr_scale);
    if (!range_groups.empty()) clip_optimizer = std::make_unique<torch::optim::AdamW>(std::move(range_groups));
  }

  int64_t step = 0;
  double elapsed_before = 0, train_loss_before = 0;
  if (opt.resume) {
    const auto latest = train_detail::checkpoint_latest(tc.run_dir);
    OUTQ_CHECK(latest.has_value(), tc.run_dir, ": --resume: expected a checkpoint in ", tc.run_dir,
               "/checkpoints, found none (start without --resume)");
    const nlohmann::json state = train_detail::checkpoint_load(*latest, model, optimizer, device);
    const std::string state_path = *latest + "/trainer_state.json";
    try {
      check_same_run(state.at("resume_key"), key, resume_key(ModelConfig{}, TrainConfig{}, QatConfig{}, ""), state_path);
      step = state.at("step").get<int64_t>();
      sampler.restore({state.at("sampler_seed").get<uint64_t>(), state.at("sampler_drawn").get<uint64_t>()});
      elapsed_before = json_value<double>(state, "elapsed_seconds", 0.0, state_path);
      train_loss_before = json_value<double>(state, "train_loss", 0.0, state_path);
    } catch (const nlohmann::json::exception& e) {
      fail_mismatch(state_path, "", "the step, sampler state and resume key of a training run",
                    std::string("a malformed state (") + e.what() + ")");
    }
    if (qat || weight_qat) {
      auto extra = train_detail::checkpoint_extra(*latest);
      if (qat) qat->load_clips(extra);
      if (weight_qat) weight_qat->load_steps(extra);
      if (clip_optimizer) {
        const auto bytes = extra.at("clip_optimizer").contiguous();
        std::istringstream in(std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel()));
        torch::load(*clip_optimizer, in);
      }
    }
    log_info("resuming from {} (step {} of {})", *latest, step, tc.steps);
  } else if (train_detail::checkpoint_latest(tc.run_dir)) {
    throw Error(fmt::format("{}: holds checkpoints of an earlier run; expected an empty run directory "
                            "(pass --resume to continue it, or choose another train.run_dir)", tc.run_dir));
  }
  std::vector<torch::Tensor> trained = params;  // everything the ranks average gradients of
  if (clip_optimizer) {
    for (auto& g : clip_optimizer->param_groups()) trained.insert(trained.end(), g.params().begin(), g.params().end());
  }
  train_detail::check_ranks_agree(group.get(), key.dump() + "\n" + opt.init_from, trained);
  std::unique_ptr<GradientReducer> reducer;
  if (group) {
    reducer = std::make_unique<GradientReducer>(trained, *group, static_cast<int64_t>(tc.dist_bucket_mb * (1 << 20)),
                                                tc.dist_overlap);
    log_info("{} ranks x {} windows; gradients: {} in {} all-reduce buckets{}", world, local_batch,
             format_bytes(static_cast<double>(reducer->bytes_per_step())), reducer->buckets(),
             tc.dist_overlap ? ", overlapped with the backward pass" : "");
  }
  std::optional<MetricsLog> metrics;
  if (lead) {
    fs::create_directories(tc.run_dir);  // after the checks: a refused run creates nothing
    write_file_atomic(fs::path(tc.run_dir) / "config.json", opt.config_json);
    metrics.emplace(fs::path(tc.run_dir) / "metrics.jsonl", opt.resume ? step : -1);
  }
  auto write_metrics = [&](const nlohmann::json& record) {
    if (metrics) metrics->write(record);
  };

  const int64_t tokens_per_step = static_cast<int64_t>(tc.batch_size) * tc.seq_len * tc.grad_accum;
  log_info("model: {} parameters; {} tokens per step; {} steps; data {}", format_count(opt.model.parameter_count()),
           format_count(tokens_per_step), tc.steps, data_summary.dir);

  PerplexityOptions eval_opt;
  eval_opt.seq_len = tc.seq_len;
  eval_opt.max_tokens = tc.eval_tokens;
  eval_opt.batch_size = tc.batch_size;
  eval_opt.bos_id = data.tokenizer().bos_id();
  eval_opt.show_progress = false;

  TrainResult result;
  result.final_train_loss = train_loss_before;  // what a resumed run that trains no step reports
  auto evaluate = [&](int64_t at_step) {
    const PerplexityResult r = train_detail::evaluate_across_ranks(model, val_shard, eval_opt, group.get());
    result.final_val_loss = r.mean_nll();
    result.final_val_ppl = r.perplexity();
    write_metrics({{"type", "eval"}, {"step", at_step}, {"val_loss", r.mean_nll()}, {"val_ppl", r.perplexity()},
                   {"val_tokens", r.tokens}});
    log_info("step {}  validation loss {:.4f}  perplexity {:.2f}  ({} tokens, {:.1f}s)", at_step, r.mean_nll(),
             r.perplexity(), format_count(r.tokens), r.seconds);
  };
  auto light_stats = [&](int64_t at_step) {
    AnalyzeOptions ao;
    ao.max_tokens = tc.stats_tokens;
    ao.seq_len = tc.seq_len;
    ao.batch_size = tc.batch_size;
    ao.bos_id = data.tokenizer().bos_id();
    ao.heatmap = false;
    ao.show_progress = false;
    const AnalysisResult a = analyze_model(model, val_shard, ao);
    model->train();
    write_metrics({{"type", "stats"}, {"step", at_step}, {"by_layer_type", layer_type_summary(a.points)}});
  };
  auto save = [&](double elapsed) {
    nlohmann::json state = {{"format", "outq-train-state"}, {"version", 1}, {"step", step},
                            {"sampler_seed", sampler.state().seed}, {"sampler_drawn", sampler.state().drawn},
                            {"elapsed_seconds", elapsed}, {"train_loss", result.final_train_loss}, {"resume_key", key}};
    std::map<std::string, torch::Tensor> extra;
    if (qat) extra = qat->named_clips();
    if (weight_qat) extra.merge(weight_qat->named_steps());
    if (clip_optimizer) {
      std::ostringstream bytes;
      torch::save(*clip_optimizer, bytes);
      const std::string b = bytes.str();
      extra["clip_optimizer"] = torch::from_blob(const_cast<char*>(b.data()), {static_cast<int64_t>(b.size())},
                                                 torch::kUInt8).clone();
    }
    train_detail::checkpoint_save(tc.run_dir, step, model, optimizer, state, data_tokenizer, tc.keep_checkpoints, extra);
  };

  StopSignals signals;
  model->train();
  std::vector<int32_t> buffer(static_cast<size_t>(local_batch) * (tc.seq_len + 1));
  const auto t_start = std::chrono::steady_clock::now();
  auto elapsed_now = [&] { return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(); };
  const int64_t first_step = step;
  double phase[4] = {0, 0, 0, 0};  // forward, backward, optimizer, gradient all-reduce seconds
  double interval_loss = 0;
  int64_t interval_steps = 0;
  auto interval_start = std::chrono::steady_clock::now();
  while (step < tc.steps) {
    const double lr = tc.lr_at(step);
    if (qat) qat->set_step(step);
    if (weight_qat) weight_qat->set_step(step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    for (auto& p : params) p.mutable_grad().reset();  // set to none: the first backward writes, no zero fill
    if (clip_optimizer) {
      auto& range_groups = clip_optimizer->param_groups();
      for (size_t i = 0; i < range_groups.size(); ++i) {
        static_cast<torch::optim::AdamWOptions&>(range_groups[i].options()).lr(lr * range_lr_scales[i]);
        for (auto& p : range_groups[i].params()) p.mutable_grad().reset();
      }
    }
    double step_penalty = 0;
    double step_loss = 0;
    for (int micro = 0; micro < tc.grad_accum; ++micro) {
      for (int b = 0; b < tc.batch_size; ++b) {
        const uint64_t start = sampler.next();  // every rank draws the whole global batch, in order
        if (b / local_batch != rank) continue;
        int32_t* row = buffer.data() + static_cast<size_t>(b - rank * local_batch) * (tc.seq_len + 1);
        row[0] = data.tokenizer().bos_id();
        train_shard.copy(start, static_cast<uint64_t>(tc.seq_len), row + 1);
      }
      auto windows = torch::from_blob(buffer.data(), {local_batch, tc.seq_len + 1}, torch::kInt32).to(device, torch::kInt64);
      const auto t_fwd = std::chrono::steady_clock::now();
      auto loss = model->loss(windows);
      const double value = loss.item<double>();  // cross entropy alone: comparable across modes
      if (qat) {
        const auto penalty = qat->take_penalty();
        step_penalty += penalty.item<double>() / tc.grad_accum;
        // A penalty summed over tokens is the ranks' sum, not their mean: scale it so that the
        // averaged gradient is the global batch's.
        loss = loss + (opt.qat.kurtosis_reduction == "sum" && world > 1 ? penalty * static_cast<double>(world) : penalty);
      }
      const auto t_bwd = std::chrono::steady_clock::now();
      phase[0] += std::chrono::duration<double>(t_bwd - t_fwd).count();
      step_loss += value / tc.grad_accum;
      if (reducer && micro + 1 == tc.grad_accum) reducer->arm();
      (tc.grad_accum > 1 ? loss / tc.grad_accum : loss).backward();
      phase[1] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_bwd).count();
    }
    int stop_signal = g_stop_signal.load();
    if (group) {
      phase[3] += reducer->finish();
      // The ranks' mean loss (and penalty: their sum when it is summed over tokens), and one
      // agreed stop: a signal any rank received stops all of them after this step.
      auto sums = torch::tensor({step_loss, step_penalty}, torch::kFloat64);
      group->all_reduce(sums, ProcessGroup::Op::kSum, "the step's loss");
      step_loss = sums[0].item<double>() / world;
      step_penalty = sums[1].item<double>() / (opt.qat.kurtosis_reduction == "sum" ? 1 : world);
      auto stop = torch::tensor({stop_signal}, torch::kInt64);
      group->all_reduce(stop, ProcessGroup::Op::kMax, "agreeing on a stop");
      stop_signal = static_cast<int>(stop.item<int64_t>());
    }
    if (!std::isfinite(step_loss) || !std::isfinite(step_penalty)) {
      throw Error(fmt::format("training stopped: the loss is {} at step {} (lr {:.3g}); no checkpoint was written "
                              "after step {}. Expected a finite loss: lower train.lr, raise train.warmup_steps or "
                              "set train.grad_clip", std::isfinite(step_loss) ? step_penalty : step_loss, step + 1, lr, step));
    }
    const auto t_opt = std::chrono::steady_clock::now();
    const double grad_norm = tc.grad_clip > 0 ? torch::nn::utils::clip_grad_norm_(params, tc.grad_clip)
                                              : torch::nn::utils::clip_grad_norm_(params, 1e30);
    if (!std::isfinite(grad_norm)) {
      throw Error(fmt::format("training stopped: the gradient norm is {} at step {} (lr {:.3g}); no checkpoint was "
                              "written after step {}. Expected finite gradients: lower train.lr", grad_norm, step + 1, lr, step));
    }
    optimizer.step();
    if (clip_optimizer) {
      clip_optimizer->step();
      if (qat) qat->constrain_clips();
      if (weight_qat) weight_qat->constrain();
    }
    phase[2] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_opt).count();
    ++step;
    result.final_train_loss = step_loss;
    interval_loss += step_loss;
    ++interval_steps;

    if (step % tc.log_every == 0 || step == tc.steps) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - interval_start).count();
      const double tps = interval_steps * tokens_per_step / std::max(dt, 1e-9);
      const double done_time = std::chrono::duration<double>(now - t_start).count();
      const double eta = done_time / static_cast<double>(step - first_step) * static_cast<double>(tc.steps - step);
      write_metrics({{"type", "train"}, {"step", step}, {"loss", step_loss}, {"loss_avg", interval_loss / interval_steps},
                     {"lr", lr}, {"grad_norm", grad_norm}, {"tokens", step * tokens_per_step},
                     {"tokens_per_s", tps}, {"elapsed_s", elapsed_now()}, {"eta_s", eta},
                     {"kurtosis_penalty", step_penalty}, {"clips", qat && qat->quantizing() ? qat->clip_summary() : nlohmann::json::object()}});
      log_info("step {}/{}  loss {:.4f}  lr {:.2e}  gnorm {:.3f}  {:.0f} tok/s  elapsed {}  ETA {}", step, tc.steps,
               interval_loss / interval_steps, lr, grad_norm, tps, format_duration(elapsed_now()), format_duration(eta));
      interval_loss = 0;
      interval_steps = 0;
      interval_start = now;
    }
    const bool last = step == tc.steps;
    if ((tc.eval_every > 0 && step % tc.eval_every == 0) || last) evaluate(step);
    if (lead && tc.stats_every > 0 && (step % tc.stats_every == 0 || last)) light_stats(step);
    const int sig = stop_signal;
    if (lead && ((tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0) || last || sig)) save(elapsed_now());
    if (sig && !last) {
      log_warn("stopped by signal {} after step {}; checkpoint written; continue with --resume", sig, step);
      result.stopped_by_signal = sig;
      break;
    }
  }
  if (step == first_step) {
    // A resumed run that had already finished: report its validation numbers without logging them again.
    log_info("the run had already finished at step {}; nothing to train", step);
    const PerplexityResult r = train_detail::evaluate_across_ranks(model, val_shard, eval_opt, group.get());
    result.final_val_loss = r.mean_nll();
    result.final_val_ppl = r.perplexity();
  }
  result.steps_done = step;
  result.tokens = step * tokens_per_step;
  result.base_tokens = base_tokens;
  result.seconds = elapsed_now();
  const double run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  result.tokens_per_second = (step - first_step) * tokens_per_step / std::max(run_seconds, 1e-9);
  if (step == first_step && elapsed_before > 0) {  // nothing trained now: the whole run's time and speed
    result.seconds = elapsed_before;
    result.tokens_per_second = static_cast<double>(step * tokens_per_step) / elapsed_before;
  }
  if (step > first_step) {
    const double n = static_cast<double>(step - first_step);
    result.forward_s = phase[0] / n, result.backward_s = phase[1] / n, result.optimizer_s = phase[2] / n;
    result.allreduce_s = phase[3] / n;
  }
  result.ranks = world;
  if (!result.stopped_by_signal && lead) {
    result.model_dir = (fs::path(tc.run_dir) / "model").string();
    std::map<std::string, std::string> meta = {{"steps", std::to_string(step)}, {"qat_mode", opt.qat.mode},
                                               {"tokens", std::to_string(base_tokens + step * tokens_per_step)},
                                               {"run_tokens", std::to_string(step * tokens_per_step)}};
    if (!opt.init_from.empty()) meta.insert({{"init_from", opt.init_from}, {"base_tokens", std::to_string(base_tokens)}});
    if (opt.qat.quantizes_weights()) meta["weight_bits"] = std::to_string(opt.qat.weight_bits);
    model_save(model, result.model_dir, data_tokenizer, meta);
    if (qat && (opt.qat.quantizes() || opt.qat.clamps())) {
      write_file_atomic(fs::path(result.model_dir) / "clips.json", qat->clips_json().dump(2) + "\n");
    }
    if (weight_qat) learned_weights_write(weight_qat->learned(), (fs::path(result.model_dir) / kLearnedWeightsFile).string());
    try {
      plot_curve(tc.run_dir);
      const auto series = emergence_from_metrics(tc.run_dir);
      if (!series.empty()) emergence_plot(series, (fs::path(tc.run_dir) / "emergence.png").string());
    } catch (const Error& e) {
      log_warn("no curve.png / emergence.png: {}", e.what());
    }
  }
  result.peak_rss_bytes = peak_rss_bytes();
  return result;
}

bool train_has_checkpoint(const std::string& run_dir) { return train_detail::checkpoint_latest(run_dir).has_value(); }

}  // namespace outq
