//! The IR-SDE (spec section 5): its schedules and the per-step scalars of its samplers,
//! the published ones and the MR Sampler (MaRS, ICLR 2025). Plain f64
//! arithmetic on the CPU; the element-wise updates run on the GPU as
//! `mu + a (x - mu) + b noise + d (prev - mu) + c z` (see `ops::sde_update`).

use crate::error::{Error, Result};

/// The theta schedules of the original `sde_utils.py` (each gives T + 1 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The published one.
    Cosine,
    Linear,
    Constant,
}

/// Scalars of one element-wise update `mu + a (x - mu) + b noise + c z`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

/// The samplers: the original's two, and the MR Sampler (data prediction) for the
/// probability-flow ODE or the reverse SDE, first or second order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// `reverse_posterior`: the optimal reverse step of IR-SDE (the published default).
    Posterior,
    /// `reverse_sde`: Euler-Maruyama on the reverse SDE.
    Sde,
    MrOde1,
    MrOde2,
    MrSde1,
    MrSde2,
}

impl Sampler {
    /// The names the command line and the JS API take (www/lib/daclip.js and daclip.d.ts
    /// list the same; tests/sampler.rs checks them).
    pub const NAMES: [(&'static str, Sampler); 6] = [
        ("posterior", Sampler::Posterior),
        ("sde", Sampler::Sde),
        ("mr-ode1", Sampler::MrOde1),
        ("mr-ode2", Sampler::MrOde2),
        ("mr-sde1", Sampler::MrSde1),
        ("mr-sde2", Sampler::MrSde2),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, s)| *s == self).unwrap().0
    }
}

impl std::str::FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            Error::Usage(format!("unknown sampler `{s}`: use one of {}", names.join(", ")))
        })
    }
}

/// Time grids of the MR Sampler (fast-sampler spec, section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// (a) network times `100 (M - i) / M`, then a first-order step to t = 0.
    Linspace,
    /// (c) uniform in the half log-SNR from t = 100 to t = 1 over M - 1 intervals, then a
    /// first-order step to t = 0.
    LogSnr,
}

impl Grid {
    /// The names the command line and the JS API take (www/lib/daclip.js and daclip.d.ts
    /// list the same; tests/sampler.rs checks them).
    pub const NAMES: [(&'static str, Grid); 2] = [("logsnr", Grid::LogSnr), ("linspace", Grid::Linspace)];
}

impl std::str::FromStr for Grid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, g)| *g).ok_or_else(|| Error::Usage(format!("unknown grid `{s}`: use logsnr or linspace")))
    }
}

/// One network evaluation at `network_time` and the update that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    /// The time the network is shown.
    pub network_time: f32,
    /// When set, the data prediction `q = mu + q.a (x - mu) + q.b n` is computed first and
    /// kept: the next step's `prev` (order 2).
    pub prediction: Option<Update>,
    /// `x = mu + a (x - mu) + b n + d (prev - mu) + c z`.
    pub update: Update,
    /// Coefficient of the previous prediction (0 for first-order steps).
    pub d: f64,
}

#[derive(Debug, Clone)]
pub struct IrSde {
    /// Number of steps of this schedule.
    pub t: usize,
    pub max_sigma: f64,
    pub thetas: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub thetas_cumsum: Vec<f64>,
    pub dt: f64,
    pub sigma_bars: Vec<f64>,
}

/// The published settings: max_sigma 50/255, T = 100, cosine schedule, eps = 0.005.
pub const PUBLISHED_T: usize = 100;

/// The most network evaluations a sampler takes (the MR Sampler works on any grid; beyond
/// 100 evaluations it is a reference solver).
pub const MAX_STEPS: usize = 1000;

impl IrSde {
    pub fn new(max_sigma: f64, t: usize, schedule: Schedule, eps: f64) -> Result<IrSde> {
        if t == 0 {
            return Err(Error::Usage("the number of sampling steps must be at least 1".into()));
        }
        let n = t + 1;
        let thetas: Vec<f64> = match schedule {
            Schedule::Cosine => {
                // a_k = cos(((k / m) + s) / (1 + s) * pi / 2)^2, k = 0..=m with m = T + 2,
                // normalised by a_0; thetas = 1 - a[1..=T+1].
                let (m, s) = ((t + 2) as f64, 0.008);
                let a: Vec<f64> = (0..=t + 2).map(|k| (((k as f64 / m) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2)).collect();
                a[1..=t + 1].iter().map(|ak| 1.0 - ak / a[0]).collect()
            }
            Schedule::Linear => {
                let scale = 1000.0 / n as f64;
                let (start, end) = (scale * 0.0001, scale * 0.02);
                (0..n).map(|k| start + (end - start) * k as f64 / (n - 1).max(1) as f64).collect()
            }
            Schedule::Constant => vec![1.0; n],
        };
        let sigmas = thetas.iter().map(|th| (max_sigma * max_sigma * 2.0 * th).sqrt()).collect();
        let mut acc = 0.0;
        let thetas_cumsum: Vec<f64> = thetas.iter().map(|th| { acc += th; acc - thetas[0] }).collect();
        let dt = -eps.ln() / thetas_cumsum[t];
        let sigma_bars = thetas_cumsum.iter().map(|cs| (max_sigma * max_sigma * (1.0 - (-2.0 * cs * dt).exp())).sqrt()).collect();
        Ok(IrSde { t, max_sigma, thetas, sigmas, thetas_cumsum, dt, sigma_bars })
    }

    /// max_sigma 50/255, cosine, eps 0.005, with `steps` steps. The published model uses
    /// 100; fewer steps follow the original's `sample_T`: the schedule is built for
    /// `steps` and the network is shown the time `t * 100 / steps` (see [`Self::network_time`]).
    pub fn published(steps: usize) -> Result<IrSde> {
        IrSde::new(50.0 / 255.0, steps, Schedule::Cosine, 0.005)
    }

    /// The time the network sees at step `t` (the original's `t * sample_scale`).
    pub fn network_time(&self, t: usize) -> f32 {
        (t as f64 * PUBLISHED_T as f64 / self.t as f64) as f32
    }

    fn posterior_factors(&self, t: usize) -> (f64, f64, f64) {
        let dt = self.dt;
        let a = (-self.thetas[t] * dt).exp();
        let b = (-self.thetas_cumsum[t] * dt).exp();
        let c = (-self.thetas_cumsum[t - 1] * dt).exp();
        (a, b, c)
    }

    /// `x0 = (x - mu - sigma_bar n) exp(thetas_cumsum dt) + mu` as an update.
    pub fn x0_update(&self, t: usize) -> Update {
        let e = (self.thetas_cumsum[t] * self.dt).exp();
        Update { a: e, b: -e * self.sigma_bars[t], c: 0.0 }
    }

    /// The posterior mean as an update of (x, noise), and its standard deviation.
    fn posterior(&self, t: usize) -> (Update, f64) {
        let (a, b, c) = self.posterior_factors(t);
        let k1 = a * (1.0 - c * c) / (1.0 - b * b);
        let k2 = c * (1.0 - a * a) / (1.0 - b * b);
        let x0 = self.x0_update(t);
        let mean = Update { a: k1 + k2 * x0.a, b: k2 * x0.b, c: 0.0 };
        let (a2, b2, c2) = (a * a, b * b, c * c);
        let var = (1.0 - a2) * (1.0 - c2) / (1.0 - b2);
        let std = (0.5 * var.max(1e-20 * self.dt).ln()).exp() * self.max_sigma;
        (mean, std)
    }

    /// The posterior mean alone (fixture `post*_mean`).
    pub fn posterior_mean_update(&self, t: usize) -> Update {
        self.posterior(t).0
    }

    /// The standard deviation of the posterior step (fixture `post*_std`).
    pub fn posterior_std(&self, t: usize) -> f64 {
        self.posterior(t).1
    }

    /// The posterior sampler's step t -> t-1, given the network's noise at t.
    pub fn posterior_step(&self, t: usize) -> Update {
        let (mean, std) = self.posterior(t);
        Update { c: std, ..mean }
    }

    /// The Euler-Maruyama reverse-SDE step t -> t-1:
    /// `x - (theta (mu - x) - sigma^2 score) dt - sigma sqrt(dt) z`, score = -n / sigma_bar.
    pub fn sde_step(&self, t: usize) -> Update {
        let (th, sg, dt) = (self.thetas[t], self.sigmas[t], self.dt);
        Update { a: 1.0 + th * dt, b: -sg * sg * dt / self.sigma_bars[t], c: -sg * dt.sqrt() }
    }
}

/// The continuous-time view of the published schedule used by the MR Sampler:
/// `Theta(t)` is the integrated rate, linear between the integer points `S_k dt`.
impl IrSde {
    pub fn theta(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.t as f64);
        let k = (t.floor() as usize).min(self.t - 1);
        let f = t - k as f64;
        (self.thetas_cumsum[k] * (1.0 - f) + self.thetas_cumsum[k + 1] * f) * self.dt
    }

    pub fn alpha(&self, t: f64) -> f64 {
        (-self.theta(t)).exp()
    }

    pub fn sigbar(&self, t: f64) -> f64 {
        self.max_sigma * (-(-2.0 * self.theta(t)).exp_m1()).max(0.0).sqrt()
    }

    /// Half log-SNR `ln(alpha / sigbar)`; +inf at t = 0.
    pub fn lambda(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigbar(t)).ln()
    }

    /// The time whose half log-SNR is `lam` (inverse of [`Self::lambda`]).
    pub fn time_of_lambda(&self, lam: f64) -> f64 {
        let target = 0.5 * (-2.0 * (lam + self.max_sigma.ln())).exp().ln_1p();
        let s = &self.thetas_cumsum;
        let k = (1..=self.t).find(|&k| s[k] * self.dt >= target).unwrap_or(self.t);
        let (lo, hi) = (s[k - 1] * self.dt, s[k] * self.dt);
        (k - 1) as f64 + if hi > lo { ((target - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 }
    }

    /// The times `t_0 = 100 > t_1 > ... > t_M = 0` of an M-evaluation grid.
    pub fn grid(&self, grid: Grid, evaluations: usize) -> Result<Vec<f64>> {
        let m = evaluations;
        if m == 0 || m > MAX_STEPS {
            return Err(steps_error(m));
        }
        let top = self.t as f64;
        let mut times: Vec<f64> = match grid {
            Grid::Linspace => (0..m).map(|i| top * (m - i) as f64 / m as f64).collect(),
            Grid::LogSnr if m == 1 => vec![top],
            Grid::LogSnr => {
                let (l0, l1) = (self.lambda(top), self.lambda(1.0));
                (0..m).map(|i| if i == 0 { top } else if i == m - 1 { 1.0 } else { self.time_of_lambda(l0 + (l1 - l0) * i as f64 / (m - 1) as f64) }).collect()
            }
        };
        times.push(0.0);
        Ok(times)
    }

    /// `q = mu + (x - mu - sigbar(s) n) / alpha(s)` as an update.
    fn prediction_at(&self, s: f64) -> Update {
        let a = self.alpha(s);
        Update { a: 1.0 / a, b: -self.sigbar(s) / a, c: 0.0 }
    }

    /// The steps of `sampler` with `evaluations` network calls. The posterior and sde
    /// samplers follow the original (a schedule of `evaluations` steps, network time
    /// scaled to 100); `grid` applies to the MR samplers. `self` must be the published
    /// 100-step schedule for the MR samplers.
    pub fn plan(&self, sampler: Sampler, evaluations: usize, grid: Grid) -> Result<Vec<PlannedStep>> {
        if evaluations == 0 || evaluations > MAX_STEPS {
            return Err(steps_error(evaluations));
        }
        let (ode, order2) = match sampler {
            Sampler::Posterior | Sampler::Sde => {
                let sde = IrSde::new(self.max_sigma, evaluations, Schedule::Cosine, (-self.thetas_cumsum[self.t] * self.dt).exp())?;
                let step = |t| if sampler == Sampler::Posterior { sde.posterior_step(t) } else { sde.sde_step(t) };
                return Ok((1..=sde.t).rev().map(|t| PlannedStep { network_time: sde.network_time(t), prediction: None, update: step(t), d: 0.0 }).collect());
            }
            Sampler::MrOde1 => (true, false),
            Sampler::MrOde2 => (true, true),
            Sampler::MrSde1 => (false, false),
            Sampler::MrSde2 => (false, true),
        };
        let times = self.grid(grid, evaluations)?;
        let mut steps = Vec::with_capacity(evaluations);
        for i in 0..evaluations {
            let (s, t) = (times[i], times[i + 1]);
            let q = self.prediction_at(s);
            if t == 0.0 {
                // sigbar(0) = 0: every formula tends to x = q_s; first order.
                steps.push(PlannedStep { network_time: s as f32, prediction: None, update: q, d: 0.0 });
                continue;
            }
            let (a_s, sb_s, a_t, sb_t) = (self.alpha(s), self.sigbar(s), self.alpha(t), self.sigbar(t));
            let h = self.lambda(t) - self.lambda(s);
            let (cx, cq, phi, cz) = if ode {
                let e = -(-h).exp_m1(); // 1 - e^-h
                (sb_t / sb_s, a_t * e, 1.0 - e / h, 0.0)
            } else {
                let e2 = -(-2.0 * h).exp_m1(); // 1 - e^-2h
                (sb_t / sb_s * (-h).exp(), a_t * e2, 1.0 - e2 / (2.0 * h), sb_t * e2.sqrt())
            };
            // Second order from the second step on, with r = h_prev / h.
            let cd = if order2 && i > 0 {
                let h_prev = self.lambda(s) - self.lambda(times[i - 1]);
                a_t * phi / (h_prev / h)
            } else {
                0.0
            };
            // x_t = mu + cx (x - mu) + cq (q_s - mu) + cd (q_s - q_p) + cz z, written in
            // terms of x and n (q_s - mu = (x - mu)/a_s - sb_s/a_s n) and prev = q_p.
            let update = Update { a: cx + (cq + cd) / a_s, b: -(cq + cd) * sb_s / a_s, c: cz };
            steps.push(PlannedStep { network_time: s as f32, prediction: order2.then_some(q), update, d: -cd });
        }
        Ok(steps)
    }
}

fn steps_error(steps: usize) -> Error {
    Error::Usage(format!("steps must be an integer from 1 to {MAX_STEPS}, not {steps}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_the_original_shape() {
        for schedule in [Schedule::Cosine, Schedule::Linear, Schedule::Constant] {
            let sde = IrSde::new(50.0 / 255.0, 100, schedule, 0.005).unwrap();
            assert_eq!(sde.thetas.len(), 101);
            assert_eq!(sde.thetas_cumsum[0], 0.0);
            assert!(sde.dt > 0.0);
            // At T the forward process has reached eps: sigma_bar = max_sigma sqrt(1 - eps^2).
            let end = sde.sigma_bars[100] / sde.max_sigma;
            assert!((end - (1.0f64 - 0.005 * 0.005).sqrt()).abs() < 1e-12, "{schedule:?}: {end}");
            assert!(sde.sigma_bars.windows(2).all(|w| w[1] >= w[0]), "{schedule:?}: sigma_bars increase");
        }
        let cosine = IrSde::published(100).unwrap();
        assert!((cosine.thetas[0] - 6.14e-4).abs() < 1e-6, "thetas[0] = {}", cosine.thetas[0]);
        assert!((cosine.dt - 0.1040938).abs() < 1e-6, "dt = {}", cosine.dt);
    }

    #[test]
    fn fewer_steps_scale_the_network_time() {
        let sde = IrSde::published(10).unwrap();
        let times: Vec<f32> = (1..=10).rev().map(|t| sde.network_time(t)).collect();
        assert_eq!(times, [100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0]);
        assert!(IrSde::published(0).is_err());
    }

    #[test]
    fn continuous_schedule_matches_the_spec() {
        let sde = IrSde::published(100).unwrap();
        for (t, alpha, sigbar) in [(1.0, 0.999824, 0.003683), (10.0, 0.985365, 0.033423), (20.0, 0.916229, 0.078560), (60.0, 0.195370, 0.192300), (100.0, 0.005, 0.196076)] {
            assert!((sde.alpha(t) - alpha).abs() < 1e-6 && (sde.sigbar(t) - sigbar).abs() < 1e-6, "t = {t}");
        }
        for (t, lam) in [(100.0, -3.6691), (20.0, 2.4564), (1.0, 5.6040)] {
            assert!((sde.lambda(t) - lam).abs() < 1e-4, "lambda({t}) = {}", sde.lambda(t));
            assert!((sde.time_of_lambda(lam) - t).abs() < 1e-3);
        }
        let c5: Vec<f64> = sde.grid(Grid::LogSnr, 5).unwrap();
        for (got, want) in c5.iter().zip([100.0, 76.72, 45.17, 10.80, 1.0, 0.0]) {
            assert!((got - want).abs() < 0.01, "{c5:?}");
        }
        assert_eq!(sde.grid(Grid::Linspace, 5).unwrap(), [100.0, 80.0, 60.0, 40.0, 20.0, 0.0]);
    }

    #[test]
    fn ode2_coefficients_match_the_spec_example() {
        // Grid (a) with t_M = 1 of the spec's example: compare cx, cq, cd of ODE-2.
        let sde = IrSde::published(100).unwrap();
        let times = [100.0, 80.0, 60.0, 40.0, 20.0, 1.0];
        let want = [(0.99931, 0.03245, 0.0), (0.98142, 0.15862, 0.08330), (0.83841, 0.40533, 0.18166), (0.48727, 0.63891, 0.36619), (0.04688, 0.95687, 1.83259)];
        for i in 0..5 {
            let (s, t) = (times[i], times[i + 1]);
            let h = sde.lambda(t) - sde.lambda(s);
            let cx = sde.sigbar(t) / sde.sigbar(s);
            let cq = sde.alpha(t) * -(-h).exp_m1();
            let cd = if i == 0 { 0.0 } else { sde.alpha(t) * (1.0 - -(-h).exp_m1() / h) / ((sde.lambda(s) - sde.lambda(times[i - 1])) / h) };
            assert!((cx - want[i].0).abs() < 1e-4 && (cq - want[i].1).abs() < 1e-4 && (cd - want[i].2).abs() < 1e-4, "step {i}: {cx} {cq} {cd}");
        }
    }

    #[test]
    fn step_counts_outside_1_to_1000_are_refused_before_any_allocation() {
        let sde = IrSde::published(100).unwrap();
        for sampler in [Sampler::Posterior, Sampler::Sde, Sampler::MrOde2] {
            for steps in [0, 1001, 1_000_000_000] {
                let err = sde.plan(sampler, steps, Grid::LogSnr).unwrap_err();
                assert_eq!(err, Error::Usage(format!("steps must be an integer from 1 to 1000, not {steps}")));
            }
            assert_eq!(sde.plan(sampler, 1000, Grid::LogSnr).unwrap().len(), 1000);
        }
    }

    #[test]
    fn last_posterior_step_is_the_x0_prediction() {
        // At t = 1 the posterior has (almost) no variance and its mean is x0.
        let sde = IrSde::published(100).unwrap();
        let (step, x0) = (sde.posterior_step(1), sde.x0_update(1));
        assert!((step.a - x0.a).abs() < 1e-9 && (step.b - x0.b).abs() < 1e-9 && step.c < 1e-8, "{step:?} vs {x0:?}");
    }
}
