//! Calendar formatting without a time-zone database (everything is UTC).

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's
/// `days_from_civil`), the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch of `2026-12-01` (midnight UTC) or
/// `2026-12-01T13:45:00Z` (UTC only, whole seconds); `None` otherwise.
pub fn parse_utc(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > 31 || date.len() != 10 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates that do not exist (Feb 30 comes back as Mar 2).
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut f = t.splitn(3, ':').map(|x| x.parse::<u64>().ok());
            let (h, mi, s) = (f.next()??, f.next()??, f.next()??);
            if t.len() != 8 || h > 23 || mi > 59 || s > 59 {
                return None;
            }
            h * 3600 + mi * 60 + s
        }
    };
    u64::try_from(days).ok().map(|d| d * 86_400 + secs)
}

/// RFC 3339 in UTC, whole seconds: `2026-12-03T18:31:45Z`.
pub fn rfc3339(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// RFC 5322 §3.3 date-time in UTC: `Thu, 3 Dec 2026 18:31:45 +0000`.
pub fn rfc5322(micros: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = micros / 1_000_000;
    let days = secs / 86_400;
    let (y, mo, d) = civil_from_days(days as i64);
    let t = secs % 86_400;
    format!(
        "{}, {d} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[mo as usize - 1],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z", "Thu, 1 Jan 1970 00:00:00 +0000"),
            (
                951_782_400_000_000,
                "2000-02-29T00:00:00Z",
                "Tue, 29 Feb 2000 00:00:00 +0000",
            ),
            (
                1_796_322_705_000_000,
                "2026-12-03T18:31:45Z",
                "Thu, 3 Dec 2026 18:31:45 +0000",
            ),
        ];
        for (us, a, b) in cases {
            assert_eq!(rfc3339(us), a);
            assert_eq!(rfc5322(us), b);
            assert_eq!(parse_utc(a), Some(us / 1_000_000), "{a}");
        }
    }

    #[test]
    fn parsing_refuses_what_is_not_a_utc_date() {
        assert_eq!(parse_utc("2026-12-01"), Some(1_796_083_200));
        for bad in [
            "",
            "2026-12",
            "2026-13-01",
            "2026-02-30",
            "2026-12-01T25:00:00Z",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+01:00",
            "26-12-01",
            "2026-1-01",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        for days in [-1, 0, 59, 10_957, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
