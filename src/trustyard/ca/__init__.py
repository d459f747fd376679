"""The authority: configuration, signer, bootstrap tokens, proofs, and the issuance pipeline."""
