//! driftwatch-triggers: the alert state machine, silences, the durable outbox
//! and the actions (retraining webhooks, email, chat).
//!
//! ```text
//! ingest ──► detectors ──► sql ──► [ triggers ] ──► webhook / email / chat
//! ```
//!
//! Nothing lives here yet: the alert lifecycle and the actions arrive with the
//! triggers issue. The crate exists so that the dependency direction of the
//! workspace is fixed from the start.
