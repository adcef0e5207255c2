// The model's own random generator: xoshiro256** seeded through splitmix64. The same seed gives
// the same stream on every platform and compiler, so initialisation and shuffling reproduce bit
// for bit. Not for cryptography.
#pragma once
#include <cmath>
#include <cstdint>

namespace chainrule {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }
  void reseed(std::uint64_t seed) {
    std::uint64_t z = seed;
    for (auto& s : s_) s = splitmix64(z);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
    s_[2] ^= t; s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject).
  std::uint64_t below(std::uint64_t n) {
    if (n <= 1) return 0;
    __uint128_t m = __uint128_t(next()) * n;
    std::uint64_t lo = std::uint64_t(m);
    if (lo < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (lo < threshold) { m = __uint128_t(next()) * n; lo = std::uint64_t(m); }
    }
    return std::uint64_t(m >> 64);
  }
  // Fisher-Yates shuffle of p[0..n).
  template <class I>
  void shuffle(I* p, std::int64_t n) {
    for (std::int64_t i = n - 1; i > 0; --i) {
      std::int64_t j = std::int64_t(below(std::uint64_t(i) + 1));
      I tmp = p[i]; p[i] = p[j]; p[j] = tmp;
    }
  }
  // The full state, for saving and restoring a model's generator.
  void get_state(std::uint64_t out[4]) const { for (int i = 0; i < 4; ++i) out[i] = s_[i]; }
  void set_state(const std::uint64_t in[4]) { for (int i = 0; i < 4; ++i) s_[i] = in[i]; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::uint64_t s_[4];
};

}  // namespace chainrule
