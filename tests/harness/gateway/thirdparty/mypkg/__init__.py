"""A pair of apps that is not the chatbot: a legacy Flask app and its FastAPI successor."""
