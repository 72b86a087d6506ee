//! (in progress: the sample generator)
