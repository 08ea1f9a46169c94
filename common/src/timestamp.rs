//! Timestamps in JSON bodies: RFC 3339 in UTC, to the microsecond PostgreSQL keeps
//! (`2026-12-03T08:15:02.123456Z`), for `#[serde(serialize_with = "common::timestamp::rfc3339")]`.
//!
//! chrono's own `Serialize` hands the timestamp to the serializer as `Display` output, in a
//! dozen small pieces, each scanned for characters to escape; for a page of 100 tasks (200
//! timestamps) that was the largest part of the time spent writing the body. Here the
//! timestamp is written into a fixed 27-byte buffer from the fields chrono already keeps (its
//! date is stored as year and day of year, so month and day are a table lookup) and handed over
//! as one string. humantime's formatter, used before, took about as long again: it rebuilds the
//! date from seconds since 1970 by loops over 400-, 100- and 4-year cycles, and goes through
//! `Display`.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// Writes `at` as one RFC 3339 string, always with six fractional digits.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match micros_text(at) {
        Some(text) => serializer.serialize_str(
            std::str::from_utf8(&text).expect("digits and ASCII separators are UTF-8"),
        ),
        // Years outside 0000–9999 have no four-digit form; PostgreSQL allows them, `now()`
        // never gives one. chrono writes them with a sign (`+10000-01-01T…`).
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, or `None` for a year outside 0000–9999.
fn micros_text(at: &DateTime<Utc>) -> Option<[u8; 27]> {
    let (date, time) = (at.date_naive(), at.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    write_digits(&mut text[0..4], year);
    write_digits(&mut text[5..7], date.month());
    write_digits(&mut text[8..10], date.day());
    write_digits(&mut text[11..13], time.hour());
    write_digits(&mut text[14..16], time.minute());
    write_digits(&mut text[17..19], time.second());
    // A leap second is kept by chrono as 1_000_000_000 ns and more; PostgreSQL never stores one,
    // and RFC 3339's `:60` would be wrong for the other 999 999 µs of the second, so it is
    // written as the last microsecond before it instead.
    write_digits(&mut text[20..26], (time.nanosecond() / 1_000).min(999_999));
    Some(text)
}

/// Writes `value` as decimal digits into all of `slot`, zero-padded on the left.
fn write_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct At(#[serde(serialize_with = "super::rfc3339")] DateTime<Utc>);

    fn written(at: DateTime<Utc>) -> String {
        serde_json::from_str::<String>(&serde_json::to_string(&At(at)).unwrap()).unwrap()
    }

    #[test]
    fn writes_utc_with_six_fractional_digits() {
        let at = Utc.timestamp_opt(1_796_284_076, 123_456_000).unwrap();
        assert_eq!(written(at), "2026-12-03T07:47:56.123456Z");
        let whole = Utc.timestamp_opt(1_796_284_076, 0).unwrap();
        assert_eq!(written(whole), "2026-12-03T07:47:56.000000Z");
        let tiny = Utc.timestamp_opt(-62_167_219_200, 1_000).unwrap();
        assert_eq!(written(tiny), "0000-01-01T00:00:00.000001Z");
    }

    #[test]
    fn a_year_without_four_digits_is_written_by_chrono_with_its_sign() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(written(far), "+10000-01-01T00:00:00.000000Z");
        let bc = Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(written(bc), "-0001-12-31T23:59:59.000000Z");
    }

    #[test]
    fn a_leap_second_is_written_inside_its_second() {
        let leap = Utc
            .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap();
        assert_eq!(written(leap), "2016-12-31T23:59:59.999999Z");
    }

    proptest! {
        /// Every instant of years 0000–9999 at microsecond precision (what PostgreSQL keeps)
        /// reads as chrono itself writes it, and back as the same instant.
        #[test]
        fn matches_chrono_and_reads_back(
            micros in -62_167_219_200_000_000_i64..253_402_300_800_000_000_i64,
        ) {
            let at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
            let text = written(at);
            prop_assert_eq!(&text, &at.to_rfc3339_opts(SecondsFormat::Micros, true));
            prop_assert_eq!(text.parse::<DateTime<Utc>>().unwrap(), at);
        }
    }
}
