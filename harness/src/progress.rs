//! Progress of long work (the guest image build, networks, a boot, leases, SSH, `minikube
//! start`, teardown). The library says when a phase starts as an INFO event of target
//! [`PROGRESS_TARGET`]; it shows nothing itself. A program that wants a view (the `mkh` command's
//! spinner) renders those events with a `tracing` layer; a test sees them in its captured output
//! when a subscriber is installed (the fixtures install one).

/// The `tracing` target of progress events: one event when a phase of long work starts (the one
/// before it ends then); its message says what the phase does, e.g. `waiting for mkh-ab12's DHCP
/// leases`.
pub const PROGRESS_TARGET: &str = "mkh::progress";

/// A phase of long work starts (and the one before it ends).
pub(crate) fn phase(text: impl std::fmt::Display) {
    tracing::info!(target: "mkh::progress", "{text}");
}
