//! The IR-SDE (spec section 5): its schedules and the per-step scalars of its samplers.
//! Plain f64 arithmetic on the CPU; the element-wise updates run on the GPU as
//! `mu + a (x - mu) + b noise + c z` (see `ops::sde_update`).

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

/// The reverse-time samplers of the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// `reverse_posterior`: the optimal reverse step of IR-SDE (the published default).
    Posterior,
    /// `reverse_sde`: Euler-Maruyama on the reverse SDE.
    Sde,
}

impl std::str::FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "posterior" => Ok(Sampler::Posterior),
            "sde" => Ok(Sampler::Sde),
            other => Err(Error::Usage(format!("unknown sampler `{other}`: use posterior or sde"))),
        }
    }
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

    /// One reverse step t -> t-1 of `sampler`, given the network's noise at t.
    pub fn step(&self, sampler: Sampler, t: usize) -> Update {
        match sampler {
            Sampler::Posterior => {
                let (mean, std) = self.posterior(t);
                Update { c: std, ..mean }
            }
            Sampler::Sde => {
                // x - (theta (mu - x) - sigma^2 score) dt - sigma sqrt(dt) z, score = -n / sigma_bar
                let (th, sg, dt) = (self.thetas[t], self.sigmas[t], self.dt);
                Update { a: 1.0 + th * dt, b: -sg * sg * dt / self.sigma_bars[t], c: -sg * dt.sqrt() }
            }
        }
    }
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
    fn last_posterior_step_is_the_x0_prediction() {
        // At t = 1 the posterior has (almost) no variance and its mean is x0.
        let sde = IrSde::published(100).unwrap();
        let (step, x0) = (sde.step(Sampler::Posterior, 1), sde.x0_update(1));
        assert!((step.a - x0.a).abs() < 1e-9 && (step.b - x0.b).abs() < 1e-9 && step.c < 1e-8, "{step:?} vs {x0:?}");
    }
}
