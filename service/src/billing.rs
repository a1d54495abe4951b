//! Change-record-hours and what they cost, in exact arithmetic.
//!
//! Usage is the integral over time of a cluster's stored change records. The meter samples
//! the stored count and integrates between consecutive samples with the trapezoid rule,
//! split at hour boundaries so every hour gets its own row. A gap between samples (a missed
//! sample, a control-plane restart) is integrated the same way, so it neither invents nor
//! drops usage.
//!
//! Quantities are integers: usage is kept as *twice* the record-microseconds (the trapezoid
//! rule halves a sum, and doubling keeps that exact), and the decimals shown to users as
//! [`Money`], [`CrHours`] and [`Records`]: distinct types over one `i128` of 10^-12, so a
//! cost cannot be added to a usage by mistake. Nothing is a float.

use std::fmt;
use std::str::FromStr;

/// Microseconds in an hour.
pub const HOUR_US: i64 = 3_600_000_000;
/// Usage units (twice record-microseconds) in one change-record-hour.
pub const UNITS_PER_CR_HOUR: i128 = 2 * HOUR_US as i128;

/// One sample of a cluster's stored change records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_us: i64,
    pub stored: i64,
}

/// Usage in one hour: `units` are twice the record-microseconds stored in the hour starting at
/// `hour_start_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourUsage {
    pub hour_start_us: i64,
    pub units: i128,
}

/// The usage between two samples, hour by hour: the stored count is taken to move linearly
/// from `from.stored` to `to.stored`.
pub fn usage_between(from: Sample, to: Sample) -> Vec<HourUsage> {
    let mut out = Vec::new();
    if to.at_us <= from.at_us {
        return out;
    }
    let span = i128::from(to.at_us - from.at_us);
    let (v0, v1) = (i128::from(from.stored), i128::from(to.stored));
    // The count at `t`, times `span` (kept scaled so that interpolation stays exact).
    let scaled = |t: i64| v0 * span + (v1 - v0) * i128::from(t - from.at_us);
    let mut start = from.at_us;
    while start < to.at_us {
        let hour = start.div_euclid(HOUR_US) * HOUR_US;
        let end = (hour + HOUR_US).min(to.at_us);
        // Trapezoid over [start, end]: (v(start) + v(end)) * (end - start), in units of twice
        // record-microseconds (still scaled by `span`).
        let doubled = (scaled(start) + scaled(end)) * i128::from(end - start);
        out.push(HourUsage {
            hour_start_us: hour,
            units: doubled,
        });
        start = end;
    }
    // Each piece is still multiplied by `span`. The pieces sum to the whole trapezoid times
    // `span`, so dividing with the remainder carried forward leaves no remainder at the end:
    // the pieces sum to exactly the whole.
    let mut carry = 0i128;
    for piece in &mut out {
        let total = piece.units + carry;
        piece.units = total / span;
        carry = total % span;
    }
    debug_assert_eq!(carry, 0);
    out
}

/// Change-record-hours in `units`, as an exact decimal.
pub fn cr_hours(units: i128) -> CrHours {
    CrHours(Fixed::ratio(units, UNITS_PER_CR_HOUR))
}

/// The cost of `units` at `price` per million change-record-hours.
pub fn cost(units: i128, price_per_million: Money) -> Money {
    // units / UNITS_PER_CR_HOUR / 1e6 * price, computed on the 10^-12 mantissa at once so the
    // only rounding is the final one.
    Money(Fixed::ratio_scaled(
        units * price_per_million.0 .0,
        UNITS_PER_CR_HOUR * 1_000_000,
    ))
}

/// Hours in a billing month, as AWS prices them.
pub const HOURS_PER_MONTH: i128 = 730;

/// What a cluster's window costs at its current rate of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Projection {
    /// Change records made per hour.
    pub created_per_hour: Records,
    /// In steady state, a window keeps `rate x window` records.
    pub stored: Records,
    pub monthly_cr_hours: CrHours,
    pub monthly_cost: Money,
}

impl std::ops::AddAssign for Projection {
    fn add_assign(&mut self, other: Projection) {
        self.created_per_hour += other.created_per_hour;
        self.stored += other.stored;
        self.monthly_cr_hours += other.monthly_cr_hours;
        self.monthly_cost += other.monthly_cost;
    }
}

/// The projection from `created` change records made in `elapsed_us`, for a target window of
/// `window_secs`, at `price_per_million` change-record-hours.
pub fn project(
    created: i64,
    elapsed_us: i64,
    window_secs: u64,
    price_per_million: Money,
) -> Projection {
    if elapsed_us <= 0 || created <= 0 || window_secs == 0 {
        return Projection::default();
    }
    let created = i128::from(created);
    let elapsed = i128::from(elapsed_us);
    let window_us = i128::from(window_secs) * 1_000_000;
    let stored = Records(Fixed::ratio(created * window_us, elapsed));
    // Records kept for every hour of the month.
    let monthly_cr_hours = CrHours(stored.0) * HOURS_PER_MONTH;
    Projection {
        created_per_hour: Records(Fixed::ratio(created * i128::from(HOUR_US), elapsed)),
        stored,
        monthly_cr_hours,
        monthly_cost: monthly_cr_hours.cost(price_per_million),
    }
}

/// An exact decimal with 12 fractional digits: the one representation under [`Money`],
/// [`CrHours`] and [`Records`], which keep the three from being mixed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
struct Fixed(i128);

/// 10^12: a [`Fixed`]'s mantissa per unit.
const SCALE: i128 = 1_000_000_000_000;

impl Fixed {
    /// `numerator / denominator`, rounded half away from zero to 12 places.
    fn ratio(numerator: i128, denominator: i128) -> Fixed {
        Fixed::ratio_scaled(numerator * SCALE, denominator)
    }

    /// `numerator / denominator` where the numerator is already in 10^-12 units.
    fn ratio_scaled(numerator: i128, denominator: i128) -> Fixed {
        let quotient = numerator / denominator;
        let remainder = numerator % denominator;
        let round = if 2 * remainder.abs() >= denominator.abs() {
            numerator.signum() * denominator.signum()
        } else {
            0
        };
        Fixed(quotient + round)
    }

    /// Rounded to `places` decimal places (half away from zero), for display.
    fn rounded(self, places: u32) -> String {
        let step = SCALE / 10i128.pow(places.min(12));
        let rounded = Fixed::ratio_scaled(self.0, step).0 * step;
        Fixed(rounded).to_string_places(places)
    }

    fn to_string_places(self, places: u32) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let whole = self.0.abs() / SCALE;
        let fraction = format!("{:012}", self.0.abs() % SCALE);
        if places == 0 {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{}", &fraction[..places.min(12) as usize])
        }
    }
}

impl fmt::Display for Fixed {
    /// All 12 places, trailing zeros trimmed (at least 2 kept).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.to_string_places(12);
        let (whole, fraction) = full.split_once('.').expect("12 places");
        let trimmed = fraction.trim_end_matches('0');
        let fraction = if trimmed.len() < 2 {
            &fraction[..2]
        } else {
            trimmed
        };
        write!(f, "{whole}.{fraction}")
    }
}

impl FromStr for Fixed {
    type Err = String;

    /// A plain decimal: digits, optionally a point and up to 12 more digits.
    fn from_str(text: &str) -> Result<Fixed, String> {
        let bad = || format!("{text:?} is not a decimal amount like 0.012");
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || fraction.len() > 12
            || whole.len() > 20
        {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let fraction: i128 = format!("{fraction:0<12}").parse().map_err(|_| bad())?;
        let value = whole * SCALE + fraction;
        Ok(Fixed(if negative { -value } else { value }))
    }
}

/// A quantity over [`Fixed`]: it adds to its own kind, scales by a count, sums, prints and
/// parses as the decimal it holds, and nothing else.
macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
        pub struct $name(Fixed);

        impl $name {
            pub const ZERO: $name = $name(Fixed(0));

            /// Rounded to `places` decimal places (half away from zero), for display.
            pub fn rounded(self, places: u32) -> String {
                self.0.rounded(places)
            }
        }

        impl std::ops::Add for $name {
            type Output = $name;
            fn add(self, other: $name) -> $name {
                $name(Fixed(self.0 .0 + other.0 .0))
            }
        }

        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, other: $name) {
                *self = *self + other;
            }
        }

        impl std::ops::Mul<i128> for $name {
            type Output = $name;
            fn mul(self, factor: i128) -> $name {
                $name(Fixed(self.0 .0 * factor))
            }
        }

        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = $name>>(items: I) -> $name {
                items.fold($name::ZERO, |a, b| a + b)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> {
                text.parse().map($name)
            }
        }
    };
}

quantity!(
    /// An amount of the billing currency, exact to 10^-12.
    Money
);
quantity!(
    /// Change-record-hours: records stored, times the hours they were stored.
    CrHours
);
quantity!(
    /// A number of change records (fractional when it is a rate or a projection).
    Records
);

impl CrHours {
    /// What these cost at `price_per_million` change-record-hours.
    pub fn cost(self, price_per_million: Money) -> Money {
        // CR-h (10^-12 units) x price (10^-12 units) / 10^12 / 10^6.
        Money(Fixed::ratio_scaled(
            self.0 .0 * price_per_million.0 .0,
            SCALE * 1_000_000,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: &str = "0.012";

    fn price() -> Money {
        PRICE.parse().unwrap()
    }

    fn total(pieces: &[HourUsage]) -> i128 {
        pieces.iter().map(|p| p.units).sum()
    }

    /// `minutes` after an hour boundary (some day in 2027).
    fn at(minutes: i64) -> i64 {
        500_000 * HOUR_US + minutes * 60_000_000
    }

    #[test]
    fn ten_million_records_for_a_day_cost_two_dollars_eighty_eight() {
        let from = Sample {
            at_us: at(0),
            stored: 10_000_000,
        };
        let to = Sample {
            at_us: at(24 * 60),
            stored: 10_000_000,
        };
        let usage = usage_between(from, to);
        assert_eq!(usage.len(), 24);
        assert_eq!(cr_hours(total(&usage)).to_string(), "240000000.00");
        assert_eq!(cost(total(&usage), price()).to_string(), "2.88");
        // Each hour alone: 10M CR-h, 12 cents.
        assert_eq!(cr_hours(usage[5].units).to_string(), "10000000.00");
        assert_eq!(cost(usage[5].units, price()).to_string(), "0.12");
    }

    #[test]
    fn sampling_every_minute_gives_the_same_as_one_long_sample() {
        let mut pieces = Vec::new();
        for minute in 0..(24 * 60) {
            let from = Sample {
                at_us: at(minute),
                stored: 10_000_000,
            };
            let to = Sample {
                at_us: at(minute + 1),
                stored: 10_000_000,
            };
            pieces.extend(usage_between(from, to));
        }
        assert_eq!(cost(total(&pieces), price()).to_string(), "2.88");
    }

    #[test]
    fn a_partial_hour_counts_its_fraction() {
        // 1M records for 15 minutes: 250,000 CR-h.
        let usage = usage_between(
            Sample {
                at_us: at(120),
                stored: 1_000_000,
            },
            Sample {
                at_us: at(135),
                stored: 1_000_000,
            },
        );
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].hour_start_us, at(120));
        assert_eq!(cr_hours(total(&usage)).to_string(), "250000.00");
        assert_eq!(cost(total(&usage), price()).to_string(), "0.003");
    }

    #[test]
    fn records_changing_mid_hour_are_integrated_linearly_between_samples() {
        // Samples at :00 (1M), :30 (3M), :60 (3M): 2M * 0.5 h + 3M * 0.5 h = 2.5M CR-h.
        let mut pieces = usage_between(
            Sample {
                at_us: at(0),
                stored: 1_000_000,
            },
            Sample {
                at_us: at(30),
                stored: 3_000_000,
            },
        );
        pieces.extend(usage_between(
            Sample {
                at_us: at(30),
                stored: 3_000_000,
            },
            Sample {
                at_us: at(60),
                stored: 3_000_000,
            },
        ));
        assert_eq!(cr_hours(total(&pieces)).to_string(), "2500000.00");
        assert_eq!(cost(total(&pieces), price()).to_string(), "0.03");
    }

    #[test]
    fn a_gap_in_sampling_neither_invents_nor_drops_usage() {
        // Steady 4M records; samples at 0:00, 0:10, then nothing until 3:40 (missed samples,
        // or the control plane was down), then 4:00.
        let samples = [at(0), at(10), at(3 * 60 + 40), at(4 * 60)].map(|t| Sample {
            at_us: t,
            stored: 4_000_000,
        });
        let pieces: Vec<HourUsage> = samples
            .windows(2)
            .flat_map(|w| usage_between(w[0], w[1]))
            .collect();
        assert_eq!(cr_hours(total(&pieces)).to_string(), "16000000.00");
        // And each hour got exactly its share.
        let mut per_hour = std::collections::BTreeMap::new();
        for p in &pieces {
            *per_hour.entry(p.hour_start_us).or_insert(0i128) += p.units;
        }
        assert!(
            per_hour
                .values()
                .all(|units| cr_hours(*units).to_string() == "4000000.00"),
            "{per_hour:?}"
        );
    }

    #[test]
    fn a_restart_mid_hour_continues_from_the_persisted_sample() {
        // Before the restart the meter sampled at 0:00 and 0:20 (persisted); the restarted
        // control plane's first sample is at 0:45, then 1:00. Growth is linear 0 -> 6M.
        let v = |m: i64| Sample {
            at_us: at(m),
            stored: m * 100_000,
        };
        let before = usage_between(v(0), v(20));
        let across = usage_between(v(20), v(45));
        let after = usage_between(v(45), v(60));
        let all: i128 = total(&before) + total(&across) + total(&after);
        // The integral of a linear ramp 0 -> 6M over one hour: 3M CR-h.
        assert_eq!(cr_hours(all).to_string(), "3000000.00");
    }

    #[test]
    fn pieces_split_at_hour_boundaries_sum_exactly() {
        let from = Sample {
            at_us: at(18) + 7,
            stored: 12_345,
        };
        let to = Sample {
            at_us: at(354) + 3,
            stored: 98_761,
        };
        let pieces = usage_between(from, to);
        assert_eq!(pieces.len(), 6);
        let whole =
            (i128::from(from.stored) + i128::from(to.stored)) * i128::from(to.at_us - from.at_us);
        assert_eq!(total(&pieces), whole);
    }

    #[test]
    fn a_window_is_projected_from_the_rate_of_change() {
        // 1,000 records an hour, measured over 30 minutes; a 24-hour window keeps 24,000
        // records: 17.52M CR-h a month, $0.21024.
        let p = project(500, HOUR_US / 2, 86_400, price());
        assert_eq!(p.created_per_hour.to_string(), "1000.00");
        assert_eq!(p.stored.to_string(), "24000.00");
        assert_eq!(p.monthly_cr_hours.to_string(), "17520000.00");
        assert_eq!(p.monthly_cost.to_string(), "0.21024");
        assert_eq!(
            project(0, HOUR_US, 86_400, price()).monthly_cost,
            Money::ZERO
        );
        assert_eq!(project(500, HOUR_US, 0, price()).stored, Records::ZERO);
    }

    #[test]
    fn decimals_parse_and_print_exactly() {
        assert_eq!(
            "0.012".parse::<Money>().unwrap(),
            Money(Fixed(12_000_000_000))
        );
        assert_eq!("5".parse::<Money>().unwrap().to_string(), "5.00");
        assert_eq!(".5".parse::<Money>().unwrap().to_string(), "0.50");
        assert_eq!(Money(Fixed(1)).to_string(), "0.000000000001");
        assert_eq!("1.2345".parse::<Money>().unwrap().rounded(2), "1.23");
        assert_eq!("1.235".parse::<Money>().unwrap().rounded(2), "1.24");
        for bad in ["", "abc", "1.2.3", "1e3", "0.0000000000001", "-"] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?}");
        }
    }
}
