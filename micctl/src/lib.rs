//! `micctl`: the operator CLI for MIC X100 cards.
