//! The run settings every property suite of the filter shares.

use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// Cases per property in CI, where the seed is fixed too, so a CI run is reproducible;
/// a long run sets `PROPTEST_CASES` (and gets a random seed unless `PROPTEST_RNG_SEED`).
const CI_CASES: u32 = 128;
const CI_SEED: u64 = 0x14_2026;

pub fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CI_CASES;
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            config.rng_seed = RngSeed::Fixed(CI_SEED);
        }
    }
    // A failure is printed with its minimal input and becomes a named test in the unit
    // suites of the module at fault, rather than a regression file next to these.
    config.failure_persistence = None;
    config
}
