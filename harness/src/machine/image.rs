//! The guest image, built by the mkh-guest-image crate.

pub use mkh_guest_image::*;
