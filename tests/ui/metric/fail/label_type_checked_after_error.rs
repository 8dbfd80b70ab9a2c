struct Loan {
    branch: u64,
}

// After an error in `metric!`, its label expressions are still type-checked: a mistake in one is
// reported now, not once the first error is fixed.
fn lend(loan: &Loan) {
    obs_runtime::metric!("lib_loan_total", branch_id = loan.brnch, channel = "desk").inc();
}

fn main() {
    lend(&Loan { branch: 1 });
}
