use obs_runtime::Scrub;

#[derive(Scrub)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
