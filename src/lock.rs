//! The image lock, compatible with xCAT's `acquire_lock_imageop` (placeholder; being written).
