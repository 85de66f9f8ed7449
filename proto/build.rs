//! Compiles the `.proto` contract with a vendored `protoc`, so the build
//! needs nothing installed system-wide.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    let files = [
        "proto/quantrac/v1/readings.proto",
        "proto/quantrac/v1/alerts.proto",
        "proto/quantrac/v1/query.proto",
    ]
    .map(std::path::PathBuf::from);
    // The descriptor set lets a server answer gRPC reflection (grpcurl).
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("quantrac_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_with_config(
            config,
            &files,
            &[std::path::PathBuf::from("proto"), include],
        )?;
    Ok(())
}
