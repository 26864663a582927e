// PLACEHOLDER (to be replaced by the owning work): lets the workspace compile meanwhile.
#[derive(clap::Args)]
pub struct TileArgs {}
pub fn main(_args: TileArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
