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
        }
    }
}
