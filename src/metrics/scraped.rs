//! Gauges read at scrape time from whoever holds the value (the delayed
//! view's footprint, say): nothing is kept up to date in between.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

/// What a scraped gauge reads.
pub type ScrapedRead = Box<dyn Fn() -> f64 + Send + Sync>;

/// Gauges whose values are read on each scrape.
#[derive(Default)]
pub struct ScrapedGauges {
    gauges: Vec<(&'static str, &'static str, ScrapedRead)>,
}

impl std::fmt::Debug for ScrapedGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.gauges.iter().map(|g| g.0).collect();
        f.debug_struct("ScrapedGauges")
            .field("gauges", &names)
            .finish()
    }
}

impl ScrapedGauges {
    /// Adds the gauge `name` (full name, prefix included) read by `read`.
    pub fn add(mut self, name: &'static str, help: &'static str, read: ScrapedRead) -> Self {
        self.gauges.push((name, help, read));
        self
    }
}

impl Collector for ScrapedGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, read) in &self.gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&read())?;
        }
        Ok(())
    }
}
