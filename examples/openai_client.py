"""Any OpenAI client works; SSD is invisible to it.  python examples/openai_client.py URL"""
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1",
                api_key="unused")
model = client.models.list().data[0].id
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Write a Python function that reverses a string."}],
    max_tokens=128, temperature=0.0)
print(chat.choices[0].message.content)
for chunk in client.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=64,
                                       temperature=0.0, stream=True):
    print(chunk.choices[0].text, end="", flush=True)
print()
