// PLACEHOLDER (to be replaced by the owning work): lets the workspace compile meanwhile.
#[derive(clap::Args)]
pub struct SynthArgs {}
pub fn main(_args: SynthArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
