//! `safeformers mirror`: a cache served as a Hub endpoint. (To be built.)
