//! Everything the user sees is drawn from one [`report::Report`] built per interval.

pub mod events;
pub mod json;
pub mod report;
pub mod text;
pub mod tui;
