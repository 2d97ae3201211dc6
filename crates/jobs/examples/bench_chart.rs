//! Draws the samples of a benchmark import (`t_s,rows_processed,rss_kib`, one
//! line per 0.5 s, written by `run_job` of `scripts/bench/lib.sh` with
//! `SAMPLES`) as an SVG: rows/s and the job-runner's RSS over time, so that
//! flat memory can be seen.
//!
//! `cargo run --release -p connectra-jobs --example bench_chart -- samples.csv out.svg "title"`

use anyhow::{bail, Context};
use plotters::prelude::*;

struct Sample {
    t: f64,
    rows: f64,
    rss_mib: f64,
}

fn read(path: &str) -> anyhow::Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let [t, rows, rss] = cells[..] else {
            bail!("{path}:{}: expected t_s,rows_processed,rss_kib", n + 1)
        };
        let num = |s: &str| -> anyhow::Result<f64> {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("{path}:{}: '{s}' is not a number", n + 1))
        };
        out.push(Sample {
            t: num(t)?,
            rows: num(rows)?,
            rss_mib: num(rss)? / 1024.0,
        });
    }
    if out.len() < 2 {
        bail!("{path} holds fewer than two samples");
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        bail!("usage: bench_chart <samples.csv> <out.svg> [title]");
    };
    let title = args.get(3).map_or("import", String::as_str);
    let samples = read(input)?;
    // rows/s between consecutive samples, at the later one's time
    let rates: Vec<(f64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| (w[1].t, (w[1].rows - w[0].rows) / (w[1].t - w[0].t)))
        .collect();
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let rate_max = rates.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1;
    let rss_max = samples.iter().map(|s| s.rss_mib).fold(1.0, f64::max) * 1.3;

    let root = SVGBackend::new(output, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max)?
        .set_secondary_coord(0.0..t_max, 0.0..rss_max);
    chart
        .configure_mesh()
        .x_desc("seconds since the job was created")
        .y_desc("rows/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("RSS (MiB)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(rates.iter().copied(), BLUE.stroke_width(2)))?
        .label("rows/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().map(|s| (s.t, s.rss_mib)),
            RED.stroke_width(2),
        ))?
        .label("job-runner RSS (MiB)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
