//! Response periods in business days: weekends and the configured holidays do
//! not count. Dates are the institution's local dates (Peru: UTC−5).

use crate::config::DeadlineConfig;
pub use crate::config::day::Day;

/// The business-day calendar of one institution.
#[derive(Debug, Clone)]
pub struct Calendar {
    holidays: Vec<Day>,
    pub utc_offset_minutes: i32,
}

impl Calendar {
    pub fn new(config: &DeadlineConfig) -> Self {
        let mut holidays: Vec<Day> = config
            .holidays
            .iter()
            .filter_map(|h| Day::parse(h))
            .collect();
        holidays.sort();
        Self {
            holidays,
            utc_offset_minutes: config.utc_offset_minutes,
        }
    }

    pub fn is_business_day(&self, day: Day) -> bool {
        !day.is_weekend() && self.holidays.binary_search(&day).is_err()
    }

    /// The date `days` business days after `start` (the start day itself does
    /// not count, as a period starts the day after notification).
    pub fn add_business_days(&self, start: Day, days: u32) -> Day {
        let mut day = start;
        let mut left = days;
        while left > 0 {
            day = Day(day.0 + 1);
            if self.is_business_day(day) {
                left -= 1;
            }
        }
        day
    }

    /// Business days from `today` until `due` (negative once overdue).
    pub fn business_days_between(&self, today: Day, due: Day) -> i32 {
        let (from, to, sign) = if due >= today {
            (today, due, 1)
        } else {
            (due, today, -1)
        };
        let mut count = 0;
        let mut day = from;
        while day < to {
            day = Day(day.0 + 1);
            if self.is_business_day(day) {
                count += 1;
            }
        }
        sign * count
    }
}

/// The response period for a filing type, in business days.
pub fn period_for(config: &DeadlineConfig, filing_type: &str) -> u32 {
    config
        .business_days_by_type
        .get(filing_type)
        .copied()
        .unwrap_or(config.default_business_days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar(holidays: &[&str]) -> Calendar {
        Calendar::new(&DeadlineConfig {
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
            ..DeadlineConfig::default()
        })
    }

    #[test]
    fn dates_round_trip() {
        let day = Day::parse("2026-12-08").unwrap();
        assert_eq!(day.to_string(), "2026-12-08");
        assert_eq!(day.weekday(), 1, "2026-12-08 is a Tuesday");
        assert!(Day::parse("2026-02-30").is_none());
        assert!(Day::parse("2026-13-01").is_none());
        assert!(Day::parse("hoy").is_none());
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        // Friday 2026-12-04 plus 3 business days: Mon 7, (Tue 8 holiday), Wed 9, Thu 10.
        let cal = calendar(&["2026-12-08"]);
        let friday = Day::parse("2026-12-04").unwrap();
        assert_eq!(cal.add_business_days(friday, 3).to_string(), "2026-12-10");
        // Without the holiday: Mon 7, Tue 8, Wed 9.
        assert_eq!(
            calendar(&[]).add_business_days(friday, 3).to_string(),
            "2026-12-09"
        );
        // Filed on a Saturday: the period starts Monday.
        let saturday = Day::parse("2026-12-05").unwrap();
        assert_eq!(cal.add_business_days(saturday, 1).to_string(), "2026-12-07");
        let due = Day::parse("2026-12-10").unwrap();
        assert_eq!(cal.business_days_between(friday, due), 3);
        assert_eq!(
            cal.business_days_between(Day::parse("2026-12-14").unwrap(), due),
            -2
        );
    }

    #[test]
    fn local_date_of_a_timestamp() {
        // 2026-12-05T03:00:00Z is still Friday the 4th in Lima (UTC−5).
        let ms = Day::parse("2026-12-05").unwrap().0 * 86_400_000 + 3 * 3_600_000;
        assert_eq!(Day::of_ms(ms, -300).to_string(), "2026-12-04");
        assert_eq!(Day::of_ms(ms, 0).to_string(), "2026-12-05");
    }
}
