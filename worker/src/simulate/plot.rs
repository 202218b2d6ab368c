//! SVG plots of the comparison: held-out loss against tokens and against bytes sent, with the
//! entropy floor drawn as a line.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::RunReport;

/// Which quantity goes on the x axis.
#[derive(Clone, Copy)]
pub enum XAxis {
    Tokens,
    /// Bytes per peer, log scale.
    Bytes,
}

pub fn loss_plot(path: &Path, runs: &[RunReport], x: XAxis, title: &str) -> Result<()> {
    let floor = runs.first().map_or(0.0, |r| r.floor);
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: r.config.name.clone(),
            points: r
                .points
                .iter()
                .filter(|p| p.tokens > 0)
                .map(|p| {
                    let xv = match x {
                        XAxis::Tokens => p.tokens as f64,
                        XAxis::Bytes => (p.bytes_per_peer.max(1)) as f64,
                    };
                    (xv, p.eval_loss)
                })
                .collect(),
        })
        .collect();
    curve_plot(path, &series, floor, x, title)
}

/// One named curve of (x, held-out loss) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Held-out loss curves with the entropy floor as a line.
pub fn curve_plot(path: &Path, series: &[Series], floor: f64, x: XAxis, title: &str) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let (xmin, xmax) = all
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
    let ymax = all.iter().map(|p| p.1).fold(floor, f64::max);
    // Start the y axis just below the floor so the gap to it is visible.
    let (ylo, yhi) = (floor - 0.05, (floor + 1.0).min(ymax + 0.05));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let palette = |i: usize| Palette99::pick(i).to_rgba();
    macro_rules! draw {
        ($chart:expr, $xdesc:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc($xdesc)
                .y_desc("held-out loss (nats/token)")
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let color = palette(i);
                chart
                    .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .draw_series(LineSeries::new(
                    vec![(xmin, floor), (xmax, floor)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| err(&e))?
                .label(format!("entropy floor {floor:.4}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    match x {
        XAxis::Tokens => draw!(
            builder
                .build_cartesian_2d(xmin..xmax, ylo..yhi)
                .map_err(|e| err(&e))?,
            "tokens (all peers)"
        ),
        XAxis::Bytes => draw!(
            builder
                .build_cartesian_2d((xmin..xmax).log_scale(), ylo..yhi)
                .map_err(|e| err(&e))?,
            "bytes sent per peer (log)"
        ),
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
