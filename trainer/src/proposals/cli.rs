// PLACEHOLDER (to be replaced by the owning work): lets the workspace compile meanwhile.
#[derive(clap::Args)]
pub struct ProposalsArgs {}
pub fn main(_args: ProposalsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
