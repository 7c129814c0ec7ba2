//! How samples are shown: [`sample::Sample`] (also the JSON line of `watch --json`) and
//! its text line.

pub mod join;
pub mod line;
pub mod printer;
pub mod sample;
