//! Reading a service's Prometheus exposition from its admin port, for tests.

/// The text of `GET {admin}/metrics`.
pub async fn scrape(client: &reqwest::Client, admin: &str) -> String {
    client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("the admin port answers")
        .text()
        .await
        .expect("an exposition")
}

/// The value of the sample named exactly `series` (with its labels, if it has any).
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} is not in the exposition"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{series} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_found_by_its_exact_series() {
        let text = "# HELP x_total X.\nx_total_extra 9\nx_total 3\ny{a=\"b\"} 0.5\n";
        assert_eq!(sample(text, "x_total"), 3.0);
        assert_eq!(sample(text, "y{a=\"b\"}"), 0.5);
    }
}
