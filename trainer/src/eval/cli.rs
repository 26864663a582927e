// PLACEHOLDER (to be replaced by the owning work): lets the workspace compile meanwhile.
#[derive(clap::Args)]
pub struct EvalArgs {}
pub fn main(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
