//! Serving what grows with a run: its curves at any length ([`live_series`]: downsampled in
//! SQL, cached until the run changes) and its artifacts at any size ([`artifacts`]: streamed
//! from the file with Range, Last-Modified and ETag, never read whole into memory).

pub mod artifacts;
pub mod live_series;

#[cfg(test)]
mod tests;
