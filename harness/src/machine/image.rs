//! The guest image, built by the mkh-guest-image crate.

pub use mkh_guest_image::*;

/// [`ensure_guest_image`], saying so as a progress phase when it has to build.
pub(crate) fn find_or_build(cache_dir: &std::path::Path) -> Result<GuestImage, ImageError> {
    if cached_guest_image(cache_dir).is_none() {
        crate::progress::phase("building the guest image from Debian's packages (once)");
    }
    ensure_guest_image(cache_dir)
}
