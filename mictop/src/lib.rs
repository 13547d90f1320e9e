//! `mictop`: the live TUI for MIC X100 cards.
