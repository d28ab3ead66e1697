"""Feature encoders behind one interface (`FeatureEncoder`) and one registry (`get_encoder`)."""
