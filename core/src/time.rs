//! Event times as producers send them: RFC 3339 strings or epoch numbers in seconds, milliseconds, microseconds or
//! nanoseconds, all turned into milliseconds since the Unix epoch. A plausibility window catches a unit mistaken for
//! another (seconds read as milliseconds land in January 1970), and lets `auto` infer the unit from the magnitude:
//! with a window narrower than a factor of 1,000 only one unit can put a number inside it.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the time column of events is written (`dataset.time_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 strings, or epoch numbers whose unit the window decides.
    #[default]
    Auto,
    /// RFC 3339 strings only, such as `2026-11-26T08:00:00Z` or `2026-11-26T09:00:00.250+01:00`.
    Rfc3339,
    /// Seconds since the Unix epoch (fractions kept to the millisecond).
    EpochS,
    /// Milliseconds since the Unix epoch.
    EpochMs,
    /// Microseconds since the Unix epoch.
    EpochUs,
    /// Nanoseconds since the Unix epoch.
    EpochNs,
}

/// Epoch units, with how many of them make a millisecond (as a ratio).
const UNITS: [(TimeFormat, &str, f64); 4] = [
    (TimeFormat::EpochS, "seconds", 1e3),
    (TimeFormat::EpochMs, "milliseconds", 1.0),
    (TimeFormat::EpochUs, "microseconds", 1e-3),
    (TimeFormat::EpochNs, "nanoseconds", 1e-6),
];

impl TimeFormat {
    fn unit(self) -> Option<(&'static str, f64)> {
        UNITS.iter().find(|(f, _, _)| *f == self).map(|(_, name, to_ms)| (*name, *to_ms))
    }
}

/// Times outside `[from, until)` (milliseconds since the Unix epoch) are refused (`dataset.time_window`, two
/// RFC 3339 times in the spec; by default 2000-01-01 to 2100-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "[String; 2]", into = "[String; 2]")]
pub struct TimeWindow {
    /// First plausible time.
    pub from: i64,
    /// First time past the window.
    pub until: i64,
}

impl Default for TimeWindow {
    fn default() -> TimeWindow {
        // 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z.
        TimeWindow { from: 946_684_800_000, until: 4_102_444_800_000 }
    }
}

impl TryFrom<[String; 2]> for TimeWindow {
    type Error = String;

    fn try_from(v: [String; 2]) -> Result<TimeWindow, String> {
        let parse =
            |s: &str| rfc3339_ms(s).map_err(|why| format!("time_window: {s:?} is not an RFC 3339 time ({why})"));
        let w = TimeWindow { from: parse(&v[0])?, until: parse(&v[1])? };
        if w.from >= w.until {
            return Err(format!("time_window: {:?} is not before {:?}", v[0], v[1]));
        }
        Ok(w)
    }
}

impl From<TimeWindow> for [String; 2] {
    fn from(w: TimeWindow) -> [String; 2] {
        [show(w.from), show(w.until)]
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", show(self.from), show(self.until))
    }
}

/// A time in milliseconds as RFC 3339 (UTC), or the number when it is outside chrono's range.
pub fn show(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{ms} ms since the Unix epoch"))
}

fn rfc3339_ms(s: &str) -> Result<i64, String> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Ok(t.timestamp_millis()),
        // A time without an offset is the commonest near miss; say so rather than chrono's generic reason.
        Err(_) if DateTime::parse_from_rfc3339(&format!("{s}Z")).is_ok() => {
            Err("it has no time zone offset; add Z for UTC or an offset such as +01:00".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

impl TimeWindow {
    /// Why the window cannot be used with `format`, if it cannot: `auto` needs a window in which no number can be
    /// read in two units, that is `0 < from` and `until <= 1000 * from`.
    pub fn check(&self, format: TimeFormat) -> Result<(), String> {
        if format == TimeFormat::Auto && (self.from <= 0 || self.until > self.from.saturating_mul(1000)) {
            return Err(format!(
                "`dataset.time_window` ({self}) is too wide for `dataset.time_format` = \"auto\": a number could be \
                 read in two units; narrow the window or name the unit (epoch_s, epoch_ms, epoch_us, epoch_ns)"
            ));
        }
        Ok(())
    }

    fn contains(&self, ms: i64) -> bool {
        (self.from..self.until).contains(&ms)
    }

    fn outside(&self, ms: i64) -> String {
        format!("{} is outside the plausible window {self} (`dataset.time_window`)", show(ms))
    }

    /// Milliseconds since the Unix epoch of an event's time, or why it is refused.
    pub fn parse(&self, format: TimeFormat, v: &Value) -> Result<i64, String> {
        match (format, v) {
            (TimeFormat::Auto | TimeFormat::Rfc3339, Value::String(s)) => {
                let ms = rfc3339_ms(s).map_err(|why| format!("{s:?} is not an RFC 3339 time: {why}"))?;
                if self.contains(ms) {
                    Ok(ms)
                } else {
                    Err(self.outside(ms))
                }
            }
            (TimeFormat::Rfc3339, other) => Err(format!(
                "must be an RFC 3339 time such as \"2026-11-26T08:00:00Z\" (`dataset.time_format` = \"rfc3339\"), \
                 got {}",
                crate::rejection::type_name(other)
            )),
            (TimeFormat::Auto, Value::Number(n)) => {
                let x = finite(n)?;
                let fits =
                    UNITS.iter().find_map(|(_, _, to_ms)| to_ms_checked(x, *to_ms).filter(|&ms| self.contains(ms)));
                fits.ok_or_else(|| {
                    let read = UNITS
                        .iter()
                        .filter_map(|(_, name, to_ms)| {
                            to_ms_checked(x, *to_ms).map(|ms| format!("{} as {name}", show(ms)))
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "{n} is not a plausible epoch time in any unit ({read}); the window is {self} \
                         (`dataset.time_window`)"
                    )
                })
            }
            (_, Value::Number(n)) => {
                let (name, to_ms) = format.unit().ok_or("has no unit")?;
                let x = finite(n)?;
                let ms = to_ms_checked(x, to_ms).ok_or_else(|| format!("{n} {name} is out of range"))?;
                if self.contains(ms) {
                    Ok(ms)
                } else {
                    Err(format!("{n} {name} since the Unix epoch is {}", self.outside(ms)))
                }
            }
            (_, other) => {
                let (name, _) = format.unit().ok_or("has no unit")?;
                Err(format!(
                    "must be a number of {name} since the Unix epoch, got {}",
                    crate::rejection::type_name(other)
                ))
            }
        }
    }
}

fn finite(n: &serde_json::Number) -> Result<f64, String> {
    n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| format!("{n} is not a finite number"))
}

/// `x` units in milliseconds, rounded to the nearest; `None` outside what an `i64` of milliseconds can hold.
fn to_ms_checked(x: f64, to_ms: f64) -> Option<i64> {
    let ms = (x * to_ms).round();
    (ms.abs() < 9.0e18).then_some(ms as i64)
}

/// Current time as RFC 3339.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_764_144_000_000; // 2025-11-26T08:00:00Z

    fn auto(v: Value) -> Result<i64, String> {
        TimeWindow::default().parse(TimeFormat::Auto, &v)
    }

    #[test]
    fn auto_reads_rfc3339_and_every_epoch_unit_as_the_same_millisecond() {
        for v in [
            json!("2025-11-26T08:00:00Z"),
            json!("2025-11-26T09:00:00+01:00"),
            json!("2025-11-26 08:00:00.000Z"),
            json!(1_764_144_000),
            json!(1_764_144_000.0),
            json!(T),
            json!(1_764_144_000_000_000i64),
            json!(1_764_144_000_000_000_000i64),
        ] {
            assert_eq!(auto(v.clone()), Ok(T), "{v}");
        }
        assert_eq!(auto(json!(1_764_144_000.25)), Ok(T + 250));
        assert_eq!(auto(json!("2025-11-26T08:00:00.2509Z")), Ok(T + 250));
    }

    #[test]
    fn seconds_sent_as_milliseconds_are_refused_with_every_reading() {
        let e = auto(json!(17_956_834)).unwrap_err();
        assert!(
            e.contains("not a plausible epoch time")
                && e.contains("1970-07-27T20:00:34Z as seconds")
                && e.contains("time_window"),
            "{e}"
        );
        let e = TimeWindow::default().parse(TimeFormat::EpochMs, &json!(1_764_144_000)).unwrap_err();
        assert!(e.contains("milliseconds") && e.contains("1970-01-21") && e.contains("outside"), "{e}");
    }

    #[test]
    fn named_formats_take_only_their_own_kind_of_value() {
        let w = TimeWindow::default();
        assert_eq!(w.parse(TimeFormat::EpochS, &json!(1_764_144_000)), Ok(T));
        assert_eq!(w.parse(TimeFormat::EpochUs, &json!(1_764_144_000_000_000i64)), Ok(T));
        let e = w.parse(TimeFormat::EpochMs, &json!("2025-11-26T08:00:00Z")).unwrap_err();
        assert!(e.contains("must be a number of milliseconds") && e.contains("a string"), "{e}");
        let e = w.parse(TimeFormat::Rfc3339, &json!(T)).unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("a number"), "{e}");
    }

    #[test]
    fn malformed_and_offsetless_strings_say_what_is_wrong() {
        let e = auto(json!("2025-11-26T08:00:00")).unwrap_err();
        assert!(e.contains("no time zone offset"), "{e}");
        let e = auto(json!("yesterday")).unwrap_err();
        assert!(e.contains("\"yesterday\" is not an RFC 3339 time"), "{e}");
        let e = auto(json!("1999-12-31T23:59:59Z")).unwrap_err();
        assert!(e.contains("outside the plausible window"), "{e}");
        assert!(auto(json!(true)).is_err() && auto(json!(null)).is_err());
        assert!(auto(json!(1e300)).unwrap_err().contains("not a plausible"));
    }

    #[test]
    fn a_window_too_wide_for_auto_is_refused_and_named_units_accept_it() {
        let wide =
            TimeWindow::try_from(["1970-01-01T00:00:00Z".to_string(), "2100-01-01T00:00:00Z".to_string()]).unwrap();
        assert!(wide.check(TimeFormat::Auto).unwrap_err().contains("too wide"));
        assert!(wide.check(TimeFormat::EpochMs).is_ok());
        assert_eq!(wide.parse(TimeFormat::EpochMs, &json!(5)), Ok(5));
        assert!(TimeWindow::default().check(TimeFormat::Auto).is_ok());
        let e =
            TimeWindow::try_from(["2100-01-01T00:00:00Z".to_string(), "2000-01-01T00:00:00Z".to_string()]).unwrap_err();
        assert!(e.contains("is not before"), "{e}");
        let e = TimeWindow::try_from(["2000-01-01".to_string(), "2100-01-01T00:00:00Z".to_string()]).unwrap_err();
        assert!(e.contains("not an RFC 3339 time"), "{e}");
    }
}
