// Binds Network<float> and Network<double> as _core.Network32 / _core.Network64.
// Compute runs with the GIL released; fit_epochs checks for Ctrl-C about every 20 ms by taking the
// GIL briefly and asking Python whether a signal is pending.
#include <pybind11/stl.h>

#include <chrono>

#include "chainrule/network.hpp"
#include "chainrule/recurrent.hpp"
#include "common.hpp"

using namespace chainrule;

namespace {

LayerSpec spec_from_dict(const py::dict& d) {
  LayerSpec s;
  s.kind = d["kind"].cast<std::string>();
  if (d.contains("in_features")) s.in_features = d["in_features"].cast<index_t>();
  if (d.contains("out_features")) s.out_features = d["out_features"].cast<index_t>();
  if (d.contains("bias")) s.bias = d["bias"].cast<bool>();
  if (d.contains("activation")) s.activation = activation_from_name(d["activation"].cast<std::string>());
  if (d.contains("negative_slope")) s.negative_slope = d["negative_slope"].cast<double>();
  if (d.contains("num_layers")) s.num_layers = d["num_layers"].cast<index_t>();
  if (d.contains("relu")) s.relu = d["relu"].cast<bool>();
  if (d.contains("return_sequences")) s.return_sequences = d["return_sequences"].cast<bool>();
  return s;
}

OptimizerConfig optimizer_from_dict(const py::dict& d) {
  OptimizerConfig o;
  const std::string kind = d["kind"].cast<std::string>();
  auto get = [&](const char* k, double def) { return d.contains(k) ? d[k].cast<double>() : def; };
  auto getb = [&](const char* k) { return d.contains(k) ? d[k].cast<bool>() : false; };
  if (kind == "sgd") {
    o.kind = OptimizerConfig::Kind::sgd;
    o.sgd.lr = get("lr", 0.01);
    o.sgd.momentum = get("momentum", 0);
    o.sgd.dampening = get("dampening", 0);
    o.sgd.weight_decay = get("weight_decay", 0);
    o.sgd.nesterov = getb("nesterov");
    o.sgd.maximize = getb("maximize");
  } else if (kind == "adam") {
    o.kind = OptimizerConfig::Kind::adam;
    o.adam.lr = get("lr", 1e-3);
    o.adam.beta1 = get("beta1", 0.9);
    o.adam.beta2 = get("beta2", 0.999);
    o.adam.eps = get("eps", 1e-8);
    o.adam.weight_decay = get("weight_decay", 0);
    o.adam.amsgrad = getb("amsgrad");
    o.adam.maximize = getb("maximize");
  } else {
    throw std::invalid_argument("unknown optimizer '" + kind + "'; expected 'sgd' or 'adam'");
  }
  return o;
}

// Pointer to the data of an optional array, checking its element count.
template <class T>
const T* opt_data(const std::optional<carray<T>>& a, chainrule::index_t expected, const char* what) {
  if (!a) return nullptr;
  if (a->size() != expected)
    throw std::invalid_argument(std::string(what) + " has " + std::to_string(a->size()) +
                                " elements, expected " + std::to_string(expected));
  return a->data();
}

// Epoch statistics as columns: one array per field, one row per epoch (a dict per epoch would
// cost more than a whole XOR epoch).
py::dict stats_to_columns(const std::vector<EpochStats>& stats) {
  const py::ssize_t E = py::ssize_t(stats.size());
  auto col = [&](auto field) {
    py::array_t<double> a(E);
    for (py::ssize_t e = 0; e < E; ++e) a.mutable_at(e) = double(field(stats[std::size_t(e)]));
    return a;
  };
  auto mat = [&](auto field) {
    const py::ssize_t C = E ? py::ssize_t(field(stats[0]).size()) : 0;
    py::array_t<double> a({E, C});
    for (py::ssize_t e = 0; e < E; ++e) {
      const std::vector<double>& v = field(stats[std::size_t(e)]);
      for (py::ssize_t c = 0; c < C; ++c) a.mutable_at(e, c) = c < py::ssize_t(v.size()) ? v[std::size_t(c)] : 0.0;
    }
    return a;
  };
  py::dict d;
  d["loss_sum"] = col([](const EpochStats& s) { return s.loss_sum; });
  d["samples"] = col([](const EpochStats& s) { return s.samples; });
  d["batches"] = col([](const EpochStats& s) { return s.batches; });
  d["grad_norm_max"] = col([](const EpochStats& s) { return s.grad_norm_max; });
  d["grad_norm_sum"] = col([](const EpochStats& s) { return s.grad_norm_sum; });
  d["nonfinite_batch"] = col([](const EpochStats& s) { return s.nonfinite_batch; });
  d["nonfinite_loss"] = col([](const EpochStats& s) { return s.nonfinite_loss; });
  d["nonfinite_update"] = col([](const EpochStats& s) { return s.nonfinite_update; });
  d["stopped"] = col([](const EpochStats& s) { return s.stopped; });
  d["correct"] = col([](const EpochStats& s) { return s.correct; });
  d["counted"] = col([](const EpochStats& s) { return s.counted; });
  d["mean_y"] = mat([](const EpochStats& s) -> const std::vector<double>& { return s.mean_y; });
  d["ss_tot"] = mat([](const EpochStats& s) -> const std::vector<double>& { return s.ss_tot; });
  d["sum_sq_err"] = mat([](const EpochStats& s) -> const std::vector<double>& { return s.sum_sq_err; });
  py::dict norms;  // layer -> (epochs, cells * T): each epoch's mean per-timestep norms
  if (E && !stats[0].step_norm_sums.empty()) {
    for (std::size_t k = 0; k < stats[0].step_norm_sums.size(); ++k) {
      const std::size_t layer = stats[0].step_norm_sums[k].first;
      const py::ssize_t W = py::ssize_t(stats[0].step_norm_sums[k].second.size());
      py::array_t<double> a({E, W});
      for (py::ssize_t e = 0; e < E; ++e) {
        const EpochStats& st = stats[std::size_t(e)];
        const double cnt = double(std::max<index_t>(st.step_norm_count, 1));
        for (py::ssize_t w = 0; w < W; ++w)
          a.mutable_at(e, w) = k < st.step_norm_sums.size() ? st.step_norm_sums[k].second[std::size_t(w)] / cnt : 0.0;
      }
      norms[py::int_(layer)] = a;
    }
  }
  d["step_norms"] = norms;
  return d;
}

// A parameter's tensor by name: "value", "grad", or an optimizer buffer "buf", "buf2", "buf3".
template <class P>  // Param<T> or const Param<T>
auto* param_buffer(P& p, const std::string& which) {
  if (which == "value") return &p.value;
  if (which == "grad") return &p.grad;
  if (which == "buf") return &p.buf;
  if (which == "buf2") return &p.buf2;
  if (which == "buf3") return &p.buf3;
  throw std::invalid_argument("unknown parameter buffer '" + which +
                              "'; expected value, grad, buf, buf2 or buf3");
}

// The network's lock on the reading side, for a binding that reads its state with the GIL held.
// Tried, never waited for: fit holds the lock on the other side for a whole epoch and takes the
// GIL now and then to look for Ctrl-C, so waiting here with the GIL would deadlock both threads.
template <class Net>
std::shared_lock<std::shared_mutex> read_lock(const Net& n) {
  std::shared_lock<std::shared_mutex> lock(n.mutex(), std::try_to_lock);
  if (!lock.owns_lock())
    throw Busy("this model is being trained or changed by another thread; its parameters and "
               "recurrent states can be read when that call has finished");
  return lock;
}

template <class T>
void bind_one(py::module_& m, const char* name) {
  using Net = Network<T>;
  py::class_<Net>(m, name)
      .def(py::init([](const py::list& specs, index_t in_features, const std::string& loss,
                       const std::string& reduction, const py::dict& optimizer,
                       std::uint64_t seed) {
             std::vector<LayerSpec> s;
             for (auto item : specs) s.push_back(spec_from_dict(item.cast<py::dict>()));
             LossConfig lc{loss_from_name(loss), reduction_from_name(reduction)};
             return new Net(s, in_features, lc, optimizer_from_dict(optimizer), seed);
           }),
           py::arg("specs"), py::arg("in_features"), py::arg("loss"), py::arg("reduction"),
           py::arg("optimizer"), py::arg("seed"))
      .def_property_readonly("input_features", &Net::input_features)
      // (time, features) of the output for an input of the given time length (0: no time axis)
      .def("output_shape", [](const Net& n, index_t time) {
        const SampleShape s = n.output_shape(time);
        return py::make_tuple(s.time, s.features);
      })
      .def("describe_layer", &Net::describe_layer)
      .def("param_names", [](const Net& n) {
        std::vector<std::string> names;
        for (auto* p : n.params()) names.push_back(p->name);
        return names;
      })
      .def("param_shape", [](const Net& n, const std::string& name) { return n.param(name).shape; })
      // which: "value", "grad", or an optimizer state buffer "buf", "buf2", "buf3"
      .def("get", [](const Net& n, const std::string& name, const std::string& which) {
        const auto lock = read_lock(n);
        const Param<T>& p = n.param(name);  // reads only: the laid-out weights stay valid
        const Buffer<T>* b = param_buffer(p, which);
        if (b->size() == 0) return py::object(py::none());
        carray<T> out = new_array<T>(p.shape);
        std::memcpy(out.mutable_data(), b->data(), b->bytes());
        return py::object(out);
      })
      // whether get(name, which) would return an array, without copying it (save lists the
      // tensors in the file's header before it reads any of them)
      .def("has", [](const Net& n, const std::string& name, const std::string& which) {
        const auto lock = read_lock(n);
        return param_buffer(n.param(name), which)->size() != 0;
      })
      .def("set", [](Net& n, const std::string& name, const std::string& which,
                     carray<T> a) {
        std::unique_lock<std::shared_mutex> lock(n.mutex(), std::try_to_lock);
        if (!lock.owns_lock()) throw Busy("this model is in use by another thread; wait for it to finish");
        // Only a new value is a change of the weights (laid-out copies, the forward tape);
        // gradients and optimizer buffers are not.
        Param<T>& p = const_cast<Param<T>&>(std::as_const(n).param(name));
        Buffer<T>* b = param_buffer(p, which);
        if (a.size() != p.size())
          throw std::invalid_argument("size mismatch for " + name + ": got " + shape_str(a));
        if (which == "value") p.changed();
        else if (which != "grad") p.exps_version = ~std::uint64_t(0);  // buffers now unknown
        if (b->size() != p.size()) b->resize(p.size());  // an optimizer buffer not yet in use
        std::memcpy(b->data(), a.data(), b->bytes());
      }, py::arg("name"), py::arg("which"), py::arg("array").noconvert())
      .def("has_buf", [](const Net& n, const std::string& name) { return n.param(name).has_buf; })
      .def("set_has_buf", [](Net& n, const std::string& name, bool v) {
        const_cast<Param<T>&>(std::as_const(n).param(name)).has_buf = v;  // not the weights
      })
      .def_property("optimizer_steps", &Net::optimizer_steps, &Net::set_optimizer_steps)
      .def("set_optimizer", [](Net& n, const py::dict& d) { n.set_optimizer(optimizer_from_dict(d)); })
      .def("set_optimizer_hyperparameters", [](Net& n, const py::dict& d) {
        n.set_optimizer_hyperparameters(optimizer_from_dict(d));
      })
      .def("set_loss", [](Net& n, const std::string& loss, const std::string& reduction) {
        n.set_loss(LossConfig{loss_from_name(loss), reduction_from_name(reduction)});
      })
      .def("reset_parameters", &Net::reset_parameters)
      .def("rng_state", [](const Net& n) {
        std::uint64_t s[4];
        n.rng_state(s);
        return std::vector<std::uint64_t>(s, s + 4);
      })
      .def("set_rng_state", [](Net& n, const std::vector<std::uint64_t>& v) {
        if (v.size() != 4) throw std::invalid_argument("rng state needs 4 words");
        n.rng().set_state(v.data());
      })
      .def("forward", [](Net& n, carray<T> x, index_t batch, index_t time) {
        const index_t expect = checked_mul(batch, SampleShape{time, n.input_features()}.size());
        if (x.size() != expect) throw std::invalid_argument("forward: input size mismatch");
        const T* out;
        {
          py::gil_scoped_release nogil;
          out = n.forward(x.data(), batch, time);
        }
        carray<T> y = new_array<T>({checked_mul(batch, n.output_shape(time).size())});
        std::memcpy(y.mutable_data(), out, std::size_t(y.size()) * sizeof(T));
        return y;
      }, py::arg("x").noconvert(), py::arg("batch"), py::arg("time"))
      .def("backward_loss", [](Net& n, std::optional<carray<T>> yf,
                               std::optional<carray<std::int64_t>> yi) {
        const index_t b = n.last_batch();
        const SampleShape out = n.output_shape(n.last_time());
        const T* pf = opt_data<T>(yf, checked_mul(b, out.size()), "y");
        const std::int64_t* pi = opt_data<std::int64_t>(yi, checked_mul(b, out.rows()), "y");
        py::gil_scoped_release nogil;
        return n.backward_loss(pf, pi);
      }, py::arg("yf").noconvert(), py::arg("yi").noconvert())
      .def("backward_grad", [](Net& n, carray<T> g) {
        if (g.size() != checked_mul(n.last_batch(), n.output_shape(n.last_time()).size()))
          throw std::invalid_argument("grad_output size mismatch");
        py::gil_scoped_release nogil;
        n.backward_grad(g.data());
      }, py::arg("grad_output").noconvert())
      .def("input_grad", [](Net& n) {
        const SampleShape in{n.last_time(), n.input_features()};
        carray<T> out = new_array<T>({checked_mul(n.last_batch(), in.size())});
        if (n.input_grad() == nullptr) throw std::logic_error("no backward has run yet");
        std::memcpy(out.mutable_data(), n.input_grad(), std::size_t(out.size()) * sizeof(T));
        return out;
      })
      .def("zero_grad", &Net::zero_grad)
      .def("step", [](Net& n) { py::gil_scoped_release nogil; n.step(); })
      .def("clip_grad_norm", &Net::clip_grad_norm, py::arg("max_norm"), py::arg("norm_type") = 2.0,
           py::arg("error_if_nonfinite") = false)
      .def("clip_grad_value", &Net::clip_grad_value)
      .def("predict", [](const Net& n, carray<T> x, index_t count, index_t time) {
        if (x.size() != checked_mul(count, SampleShape{time, n.input_features()}.size()))
          throw std::invalid_argument("predict: input size mismatch");
        carray<T> y = new_array<T>({checked_mul(count, n.output_shape(time).size())});
        T* out = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          n.predict(out, x.data(), count, time);
        }
        return y;
      }, py::arg("x").noconvert(), py::arg("count"), py::arg("time"))
      .def("loss_value", [](const Net& n, carray<T> pred, std::optional<carray<T>> yf,
                            std::optional<carray<std::int64_t>> yi, index_t count, index_t time) {
        const SampleShape out = n.output_shape(time);
        if (pred.size() != checked_mul(count, out.size()))
          throw std::invalid_argument("loss_value: prediction size mismatch");
        const T* pf = opt_data<T>(yf, pred.size(), "y");
        const std::int64_t* pi = opt_data<std::int64_t>(yi, checked_mul(count, out.rows()), "y");
        py::gil_scoped_release nogil;
        return n.loss_value(pred.data(), pf, pi, count, time);
      }, py::arg("pred").noconvert(), py::arg("yf").noconvert(), py::arg("yi").noconvert(),
         py::arg("count"), py::arg("time"))
      // Runs `epochs` epochs in one call (the caller asks for one at a time when it has work to do
      // between epochs) and returns their statistics as columns, one row per completed epoch.
      .def("fit_epochs", [](Net& n, carray<T> X, std::optional<carray<T>> yf,
                            std::optional<carray<std::int64_t>> yi, index_t count, index_t time,
                            index_t epochs, index_t batch_size, bool shuffle, double max_norm,
                            double norm_type, bool error_if_nonfinite, double clip_value,
                            bool stop_on_nonfinite, index_t bptt_steps, bool stateful,
                            bool record_step_norms) {
        if (X.size() != checked_mul(count, SampleShape{time, n.input_features()}.size()))
          throw std::invalid_argument("fit: input size mismatch");
        const SampleShape out = n.output_shape(time);
        const T* pf = opt_data<T>(yf, checked_mul(count, out.size()), "y");
        const std::int64_t* pi = opt_data<std::int64_t>(yi, checked_mul(count, out.rows()), "y");
        if (!pf && !pi) throw std::invalid_argument("fit needs targets");
        FitOptions opt;
        opt.batch_size = batch_size;
        opt.shuffle = shuffle;
        opt.clip = ClipConfig{max_norm, norm_type, error_if_nonfinite, clip_value};
        opt.stop_on_nonfinite = stop_on_nonfinite;
        opt.bptt_steps = bptt_steps;
        opt.stateful = stateful;
        opt.record_step_norms = record_step_norms;
        std::vector<EpochStats> stats;
        bool interrupted = false;
        {
          py::gil_scoped_release nogil;
          // Signals are checked every 20 ms. The clock itself is read every `stride` batches,
          // the stride adapting so that reads stay about 1 ms apart: an xor batch takes 1 us,
          // and a clock read per batch cost 2 % of it.
          auto last = std::chrono::steady_clock::now(), last_read = last;
          std::int64_t calls = 0, stride = 1;
          auto check = [&]() -> bool {
            if (++calls < stride) return false;
            calls = 0;
            const auto now = std::chrono::steady_clock::now();
            const auto since = now - last_read;
            last_read = now;
            if (since < std::chrono::microseconds(500) && stride < 4096) stride *= 2;
            else if (since > std::chrono::milliseconds(4) && stride > 1) stride /= 2;
            if (now - last < std::chrono::milliseconds(20)) return false;
            last = now;
            py::gil_scoped_acquire gil;
            return PyErr_CheckSignals() != 0;
          };
          try {
            for (index_t e = 0; e < epochs; ++e) {
              stats.push_back(n.fit_epoch(X.data(), pf, pi, count, time, opt, check));
              if (stats.back().stopped) break;
            }
          } catch (const Interrupted&) {
            interrupted = true;
          }
        }
        if (interrupted) throw py::error_already_set();
        return stats_to_columns(stats);
      }, py::arg("X").noconvert(), py::arg("yf").noconvert(), py::arg("yi").noconvert(),
         py::arg("count"), py::arg("time"), py::arg("epochs"), py::arg("batch_size"),
         py::arg("shuffle"), py::arg("max_norm") = 0.0, py::arg("norm_type") = 2.0,
         py::arg("error_if_nonfinite") = false, py::arg("clip_value") = 0.0,
         py::arg("stop_on_nonfinite") = true, py::arg("bptt_steps") = 0,
         py::arg("stateful") = false, py::arg("record_step_norms") = false)
      .def("is_recurrent", &Net::is_recurrent)
      .def("set_bptt_memory", [](Net& n, const std::string& mode, std::size_t budget) {
        if (mode != "all" && mode != "sqrt")
          throw std::invalid_argument("bptt memory mode must be 'all' or 'sqrt', got '" + mode + "'");
        n.set_bptt_memory(mode == "all" ? BpttMemory::all : BpttMemory::sqrt, budget);
      })
      .def("set_initial_state", [](Net& n, std::size_t layer, std::optional<carray<T>> h0,
                                   std::optional<carray<T>> c0) {
        n.set_initial_state(layer, h0 ? h0->data() : nullptr, h0 ? h0->size() : 0,
                            c0 ? c0->data() : nullptr, c0 ? c0->size() : 0);
      }, py::arg("layer"), py::arg("h0").noconvert(), py::arg("c0").noconvert())
      // After forward/backward of a recurrent layer: a dict of its final states, initial-state
      // gradients, per-step gradient norms and workspace bytes (arrays flat; Python shapes them).
      .def("recurrent_info", [](const Net& n, std::size_t layer) {
        const auto lock = read_lock(n);
        const auto* rc = dynamic_cast<const RecurrentCache<T>*>(n.layer_cache(layer));
        if (!rc) throw std::invalid_argument("layer " + std::to_string(layer) + " is not recurrent");
        auto arr = [](const Buffer<T>& b) -> py::object {
          if (b.size() == 0) return py::none();
          carray<T> a = new_array<T>({b.size()});
          std::memcpy(a.mutable_data(), b.data(), b.bytes());
          return a;
        };
        py::dict d;
        d["batch"] = rc->B;
        d["steps"] = rc->steps;
        d["hn"] = arr(rc->hn);
        d["cn"] = arr(rc->cn);
        d["dh0"] = arr(rc->dh0);
        d["dc0"] = arr(rc->dc0);
        d["step_norms"] = rc->step_norms;
        d["workspace_bytes"] = rc->workspace_bytes;
        d["peak_workspace_bytes"] = rc->peak_workspace_bytes;
        d["memory"] = rc->memory == BpttMemory::all ? "all" : "sqrt";
        return d;
      })
      .def("workspace_bytes", &Net::workspace_bytes);
}

}  // namespace

void bind_network(py::module_& m) {
  bind_one<float>(m, "Network32");
  bind_one<double>(m, "Network64");
}
