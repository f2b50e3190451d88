"""Human-readable names for the class labels models use in model.json."""

DISPLAY_NAMES = {
    "normal": "Normal",
    "pneumonia": "Pneumonia",
    "covid": "COVID-19",
    "tuberculosis": "Tuberculosis",
    "non_covid": "Non-COVID",
}


def display_name(label: str) -> str:
    return DISPLAY_NAMES.get(label, label.replace("_", " ").capitalize())
