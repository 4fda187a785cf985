//! The simulated market's symbols: real-looking tickers, the same for a
//! given count on every run (the load generator's `--directory sim:N`
//! relies on it).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Real-looking tickers: a few dozen well-known ones, then generated
/// three- and four-letter codes, deterministically.
pub fn tickers(n: usize) -> Vec<(String, String)> {
    const KNOWN: &[(&str, &str)] = &[
        ("AAPL", "Apple Inc."),
        ("MSFT", "Microsoft Corp."),
        ("NVDA", "NVIDIA Corp."),
        ("AMZN", "Amazon.com Inc."),
        ("GOOGL", "Alphabet Inc. Class A"),
        ("META", "Meta Platforms Inc."),
        ("TSLA", "Tesla Inc."),
        ("AVGO", "Broadcom Inc."),
        ("JPM", "JPMorgan Chase & Co."),
        ("V", "Visa Inc."),
        ("WMT", "Walmart Inc."),
        ("XOM", "Exxon Mobil Corp."),
        ("UNH", "UnitedHealth Group Inc."),
        ("MA", "Mastercard Inc."),
        ("JNJ", "Johnson & Johnson"),
        ("PG", "Procter & Gamble Co."),
        ("HD", "Home Depot Inc."),
        ("COST", "Costco Wholesale Corp."),
        ("ORCL", "Oracle Corp."),
        ("NFLX", "Netflix Inc."),
        ("AMD", "Advanced Micro Devices Inc."),
        ("KO", "Coca-Cola Co."),
        ("PEP", "PepsiCo Inc."),
        ("BAC", "Bank of America Corp."),
        ("CRM", "Salesforce Inc."),
        ("ADBE", "Adobe Inc."),
        ("INTC", "Intel Corp."),
        ("CSCO", "Cisco Systems Inc."),
        ("DIS", "Walt Disney Co."),
        ("IBM", "International Business Machines"),
        ("QCOM", "Qualcomm Inc."),
        ("TXN", "Texas Instruments Inc."),
        ("NKE", "Nike Inc."),
        ("MCD", "McDonald's Corp."),
        ("BA", "Boeing Co."),
        ("GS", "Goldman Sachs Group Inc."),
        ("CAT", "Caterpillar Inc."),
        ("UBER", "Uber Technologies Inc."),
        ("PYPL", "PayPal Holdings Inc."),
        ("SBUX", "Starbucks Corp."),
    ];
    let mut out: Vec<(String, String)> = KNOWN
        .iter()
        .take(n)
        .map(|(s, name)| (s.to_string(), name.to_string()))
        .collect();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut seen: std::collections::HashSet<String> = out.iter().map(|(s, _)| s.clone()).collect();
    while out.len() < n {
        let len = if rng.gen_bool(0.4) { 3 } else { 4 };
        let sym: String = (0..len)
            .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
            .collect();
        if seen.insert(sym.clone()) {
            let name = format!("{} Holdings Corp.", sym);
            out.push((sym, name));
        }
    }
    out
}
